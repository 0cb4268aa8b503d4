//! Reading back the timestamps Python's `datetime.isoformat()` writes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The instant `text` names, for the extended forms Python's
/// `datetime.fromisoformat` reads and `isoformat()` writes:
/// `YYYY-MM-DD[Thh[:mm[:ss[.f…]]]][Z|±hh:mm[:ss[.ffffff]]|±hhmm]`, the date and
/// time separated by any one character. A time without an offset is taken as
/// UTC (Python would give a naive datetime; the reference always writes aware
/// ones). `None` when the text is none of these.
pub(crate) fn parse(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    if bytes.len() < 10 || !text.is_char_boundary(10) {
        return None;
    }
    let year = digits(&bytes[0..4])?;
    let month = digits(&bytes[5..7])?;
    let day = digits(&bytes[8..10])?;
    if bytes[4] != b'-' || bytes[7] != b'-' || year == 0 {
        return None;
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut micros = days_from_civil(year, month, day) * 86_400_000_000;
    let rest = &text[10..];
    if rest.is_empty() {
        return from_micros(micros);
    }
    // Any one character separates the date from the time.
    let mut chars = rest.chars();
    chars.next();
    let rest = chars.as_str();
    let split = rest.find(['+', '-', 'Z', 'z']).unwrap_or(rest.len());
    let (time, offset) = rest.split_at(split);
    micros += clock_micros(time, 23)?;
    match offset {
        "" | "Z" | "z" => {}
        _ => {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let body = &offset[1..];
            let body = if body.len() == 4 && !body.contains(':') {
                format!("{}:{}", &body[..2], &body[2..])
            } else {
                body.to_owned()
            };
            if body.len() < 5 {
                return None;
            }
            let offset_micros = clock_micros(&body, 23)?;
            micros -= sign * offset_micros;
        }
    }
    from_micros(micros)
}

/// Microseconds into the day of `hh[:mm[:ss[.f…]]]`.
fn clock_micros(text: &str, max_hour: i64) -> Option<i64> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let mut parts = whole.split(':');
    let hour = parts.next().and_then(two_digits)?;
    let minute = parts.next().map_or(Some(0), two_digits)?;
    let second = parts.next().map_or(Some(0), two_digits)?;
    if parts.next().is_some() || hour > max_hour || minute > 59 || second > 59 {
        return None;
    }
    // A fraction needs seconds before it; beyond microseconds it is cut off, as
    // Python 3.11 does.
    let fraction = match fraction {
        None => 0,
        Some(digits_text) => {
            if whole.len() != 8 || digits_text.is_empty() || digits_text.len() > 9 {
                return None;
            }
            digits(digits_text.as_bytes())?;
            let mut padded: String = digits_text.chars().take(6).collect();
            while padded.len() < 6 {
                padded.push('0');
            }
            digits(padded.as_bytes())?
        }
    };
    Some(((hour * 60 + minute) * 60 + second) * 1_000_000 + fraction)
}

fn two_digits(part: &str) -> Option<i64> {
    if part.len() == 2 {
        digits(part.as_bytes())
    } else {
        None
    }
}

fn digits(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0, |value, digit| value * 10 + i64::from(digit - b'0')),
    )
}

fn from_micros(micros: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, micros: Option<i64>) {
        assert_eq!(parse(text), micros.and_then(from_micros), "{text}");
    }

    #[test]
    fn python_isoformat_texts_read_back_as_their_instant() {
        check("1970-01-01T00:00:00+00:00", Some(0));
        check("1970-01-01T00:00:00.000001+00:00", Some(1));
        check("1970-01-01T01:00:00+01:00", Some(0));
        check("1969-12-31T19:00:00-05:00", Some(0));
        check(
            "2026-11-25T15:00:00.123456+00:00",
            Some(1_795_618_800_123_456),
        );
        check(
            "2026-11-25 20:30:00.123456+05:30",
            Some(1_795_618_800_123_456),
        );
        check("2026-11-25T15:00:00Z", Some(1_795_618_800_000_000));
        check(
            "2026-11-25T15:00:00.1234567+00:00",
            Some(1_795_618_800_123_456),
        );
        check("2026-11-25T15:00", Some(1_795_618_800_000_000));
        check("2026-11-25T15:00:00+0100", Some(1_795_615_200_000_000));
        check(
            "2024-02-29",
            Some(days_from_civil(2024, 2, 29) * 86_400_000_000),
        );
        check("1969-12-31T23:59:59.999999+00:00", Some(-1));
    }

    #[test]
    fn other_texts_are_refused() {
        check("", None);
        check("yesterday", None);
        check("2023-02-29T00:00:00", None);
        check("2026-13-01T00:00:00", None);
        check("2026-11-25T24:00:00", None);
        check("2026-11-25T15:00:00+0", None);
        check("2026-11-25T15:00:00.+00:00", None);
        check("2026-11-25T15:00:00.12a+00:00", None);
    }
}
