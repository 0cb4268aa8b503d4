//! Python's `repr()` of a `str`, so records the host writes read like the ones a
//! Python host writes (`PluginDisabledError("Plugin 'x' is disabled")`).

use std::fmt::Write as _;

/// Code points Python 3.11's `str.isprintable()` rejects, apart from unassigned
/// ones (category Cn), which would need the whole Unicode database: controls, the
/// format characters, separators other than the space, and private use.
///
/// Generated from `unicodedata` by listing every assigned code point that is not
/// printable, merged into inclusive ranges.
const NOT_PRINTABLE: [(u32, u32); 28] = [
    (0x0000, 0x001F),
    (0x007F, 0x00A0),
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x1680, 0x1680),
    (0x180E, 0x180E),
    (0x2000, 0x200F),
    (0x2028, 0x202F),
    (0x205F, 0x2064),
    (0x2066, 0x206F),
    (0x3000, 0x3000),
    (0xE000, 0xF8FF),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x13438),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
    (0xF0000, 0xFFFFD),
    (0x10_0000, 0x10_FFFD),
];

fn is_printable(c: char) -> bool {
    let c = u32::from(c);
    !NOT_PRINTABLE
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// `repr(text)` as Python writes it: single quotes unless the text holds a single
/// quote and no double quote, backslash escapes for the quote, backslash, tab,
/// newline and carriage return, and `\xNN`, `\uNNNN` or `\UNNNNNNNN` for other
/// unprintable characters.
pub(crate) fn repr_str(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            // Writing to a String cannot fail.
            c if u32::from(c) <= 0xFF => _ = write!(out, "\\x{:02x}", u32::from(c)),
            c if u32::from(c) <= 0xFFFF => _ = write!(out, "\\u{:04x}", u32::from(c)),
            c => _ = write!(out, "\\U{:08x}", u32::from(c)),
        }
    }
    out.push(quote);
    out
}

/// `repr(exc)` of an exception constructed with one string argument.
pub(crate) fn repr_exception(class_name: &str, message: &str) -> String {
    format!("{class_name}({})", repr_str(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expected: &str) {
        assert_eq!(repr_str(text), expected, "repr of {text:?}");
    }

    #[test]
    fn repr_quotes_and_escapes_like_cpython() {
        check("", "''");
        check("plain", "'plain'");
        check("it's", "\"it's\"");
        check("say \"hi\"", "'say \"hi\"'");
        check("both ' and \"", "'both \\' and \"'");
        check("back\\slash", "'back\\\\slash'");
        check("a\tb\nc\rd", "'a\\tb\\nc\\rd'");
        check("\0\x1f\x7f\u{a0}", "'\\x00\\x1f\\x7f\\xa0'");
        check("caf\u{e9} \u{1f600}", "'caf\u{e9} \u{1f600}'");
        check(
            "\u{200b}\u{2028}\u{e000}\u{feff}",
            "'\\u200b\\u2028\\ue000\\ufeff'",
        );
        check("\u{e0001}\u{10fffd}", "'\\U000e0001\\U0010fffd'");
    }
}
