//! Test counts from the `JUnit` XML reports of nextest and pytest, for the summary line.
//!
//! Both runners write the counts as attributes of one element (nextest on `<testsuites>`,
//! pytest on `<testsuite>`), so a scan for that element's attributes is enough; the
//! reports are never otherwise parsed.

use std::fmt;
use std::path::Path;

/// How many tests of one runner passed and were skipped; the summary line is only
/// printed for a run without failures.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) passed: u64,
    pub(crate) skipped: u64,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed", self.passed)?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// The counts on the first `<element …>` of the report at `path`, or `None` when the
/// report is missing or has no such element.
pub(crate) fn read_counts(path: &Path, element: &str) -> Option<Counts> {
    let xml = fs_err::read_to_string(path).ok()?;
    counts(&xml, element)
}

fn counts(xml: &str, element: &str) -> Option<Counts> {
    let start = [" ", "\n", "\t", ">"]
        .iter()
        .filter_map(|end| xml.find(&format!("<{element}{end}")))
        .min()?;
    let tag = &xml[start..];
    let tag = &tag[..tag.find('>')?];
    let number = |name: &str| -> u64 {
        let key = format!(" {name}=\"");
        tag.find(&key)
            .and_then(|at| {
                let value = &tag[at + key.len()..];
                value[..value.find('"')?].parse().ok()
            })
            .unwrap_or(0)
    };
    let tests = number("tests");
    let failed = number("failures") + number("errors");
    let skipped = number("skipped");
    Some(Counts {
        passed: tests.saturating_sub(failed + skipped),
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nextest_counts_come_from_testsuites() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="12" failures="1" errors="0" uuid="x" timestamp="t" time="1.5">
    <testsuite name="xtask::bin/xtask" tests="12" disabled="0" errors="0" failures="1">"#;
        let expected = Counts {
            passed: 11,
            skipped: 0,
        };
        assert_eq!(counts(xml, "testsuites"), Some(expected));
    }

    #[test]
    fn pytest_counts_come_from_testsuite_not_testsuites() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="1" failures="0" skipped="2" tests="9" time="0.1" timestamp="t" hostname="h"><testcase/></testsuite></testsuites>"#;
        let expected = Counts {
            passed: 6,
            skipped: 2,
        };
        assert_eq!(counts(xml, "testsuite"), Some(expected));
    }

    #[test]
    fn a_report_without_the_element_has_no_counts() {
        assert_eq!(counts("<testsuites/>", "testsuite"), None);
        assert_eq!(counts("", "testsuites"), None);
    }

    #[test]
    fn counts_print_skips_only_when_there_are_some() {
        let c = |passed, skipped| Counts { passed, skipped };
        assert_eq!(c(3, 0).to_string(), "3 passed");
        assert_eq!(c(3, 2).to_string(), "3 passed, 2 skipped");
    }
}
