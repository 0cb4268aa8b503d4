//! Wall-clock stamps in the text form the reference writes.

use std::{
    fmt::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

/// Formats `time` exactly as Python's `datetime.isoformat()` formats an aware UTC
/// datetime, which is how the reference stamps `JobError.occurred_at` and
/// `PluginInstance.created_at`: `2026-11-25T15:00:00.123456+00:00`.
///
/// Like Python's clock, the time is floored to whole microseconds, and the
/// fraction is left out when it is zero (`2026-11-25T15:00:00+00:00`). Python's
/// `datetime` stops at years 1 to 9999; times outside them still format, with the
/// year as a signed number, but no Python program would write them.
pub fn isoformat_utc(time: SystemTime) -> String {
    let nanos: i128 = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    };
    let micros = nanos.div_euclid(1_000);
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60,
    );
    let mut out = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    if fraction != 0 {
        // Writing to a String cannot fail.
        _ = write!(out, ".{fraction:06}");
    }
    out.push_str("+00:00");
    out
}

/// The proleptic Gregorian date of a day counted from 1970-01-01, after Howard
/// Hinnant's `civil_from_days`, which shifts the year to start in March so the
/// leap day falls at its end.
fn civil_from_days(days: i128) -> (i128, i128, i128) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_epoch_formats_without_a_fraction() {
        assert_eq!(isoformat_utc(UNIX_EPOCH), "1970-01-01T00:00:00+00:00");
    }

    #[test]
    fn nanoseconds_below_a_microsecond_are_floored_away() {
        let time = UNIX_EPOCH + Duration::new(1, 999);
        assert_eq!(isoformat_utc(time), "1970-01-01T00:00:01+00:00");
    }

    #[test]
    fn times_before_the_epoch_floor_towards_the_past() {
        let time = UNIX_EPOCH - Duration::from_nanos(1);
        assert_eq!(isoformat_utc(time), "1969-12-31T23:59:59.999999+00:00");
    }
}
