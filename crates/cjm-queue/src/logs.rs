//! A job's lines of its plugin's log, as the reference's `get_job_logs`
//! slices them: a line stamped the way Python's `logging` stamps it
//! (`2026-01-01 12:00:00,123 …`, local time) opens the job's window if its
//! time falls between the job's start and end, and closes it otherwise;
//! unstamped lines (tracebacks, prints) belong with the stamped line before
//! them. A log with no stamped line at all is returned as its tail.

use std::time::SystemTime;

/// A local time as a sortable key: year, month, day, hour, minute, second,
/// millisecond.
type Stamp = (i32, u32, u32, u32, u32, u32, u32);

/// The lines of plugin log `raw` that `job` wrote while it ran, the last
/// `max_lines` of them (what [`JobQueue::get_job_logs`](crate::JobQueue::get_job_logs)
/// returns, for a reader of the log file itself).
pub fn job_lines(raw: &str, job: &crate::Job, max_lines: usize) -> String {
    slice(raw, job.started_at, job.completed_at, max_lines)
}

/// The lines of `raw` logged while a job ran from `started` to `ended` (still
/// running: `None`), the last `max_lines` of them.
pub(crate) fn slice(
    raw: &str,
    started: Option<SystemTime>,
    ended: Option<SystemTime>,
    max_lines: usize,
) -> String {
    let tail = |lines: Vec<&str>| lines[lines.len().saturating_sub(max_lines)..].join("\n");
    let Some(start) = started.and_then(local) else {
        return tail(raw.lines().collect());
    };
    let end = ended.and_then(local);
    let mut in_window = false;
    let mut saw_stamp = false;
    let mut selected = Vec::new();
    for line in raw.lines() {
        if let Some(at) = parse(line) {
            saw_stamp = true;
            in_window = at >= start && end.is_none_or(|end| at <= end);
        }
        if in_window {
            selected.push(line);
        }
    }
    if saw_stamp {
        tail(selected)
    } else {
        tail(raw.lines().collect())
    }
}

/// The stamp `logging` puts at the start of a line, `YYYY-MM-DD HH:MM:SS,mmm `.
fn parse(line: &str) -> Option<Stamp> {
    let b = line.as_bytes();
    if b.len() < 24 || !b[23].is_ascii_whitespace() {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        let s = line.get(from..to)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let seps = [
        (4, b'-'),
        (7, b'-'),
        (10, b' '),
        (13, b':'),
        (16, b':'),
        (19, b','),
    ];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    Some((
        i32::try_from(num(0, 4)?).ok()?,
        num(5, 7)?,
        num(8, 10)?,
        num(11, 13)?,
        num(14, 16)?,
        num(17, 19)?,
        num(20, 23)?,
    ))
}

/// `t` in this machine's local time, as `logging` writes it.
fn local(t: SystemTime) -> Option<Stamp> {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    let secs = libc::time_t::try_from(since.as_secs()).ok()?;
    // SAFETY: `localtime_r` fills the `tm` it is given from a valid `time_t`
    // and keeps no pointer to either.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&raw const secs, &raw mut tm).is_null() {
            return None;
        }
        tm
    };
    let u = |v: libc::c_int| u32::try_from(v).ok();
    Some((
        tm.tm_year + 1900,
        u(tm.tm_mon + 1)?,
        u(tm.tm_mday)?,
        u(tm.tm_hour)?,
        u(tm.tm_min)?,
        u(tm.tm_sec)?,
        since.subsec_millis(),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn stamp(at: SystemTime) -> String {
        let (year, month, day, hour, min, sec, ms) = local(at).unwrap();
        format!("{year:04}-{month:02}-{day:02} {hour:02}:{min:02}:{sec:02},{ms:03}")
    }

    #[test]
    fn the_lines_stamped_inside_the_window_come_with_their_continuations() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_hours(500_000);
        let at = |s: u64| stamp(t0 + Duration::from_secs(s));
        let raw = format!(
            "{} INFO before\n{} INFO mine\nTraceback (most recent call last):\n  boom\n{} INFO after\n",
            at(0),
            at(10),
            at(30)
        );
        let start = t0 + Duration::from_secs(5);
        let end = t0 + Duration::from_secs(20);
        assert_eq!(
            slice(&raw, Some(start), Some(end), 100),
            format!(
                "{} INFO mine\nTraceback (most recent call last):\n  boom",
                at(10)
            )
        );
        // Still running: everything from its start.
        assert!(slice(&raw, Some(start), None, 100).ends_with("INFO after"));
        // At most `max_lines`, the last ones.
        assert_eq!(slice(&raw, Some(start), Some(end), 1), "  boom");
        // Never started, or no stamps at all: the tail.
        assert!(slice(&raw, None, None, 1).ends_with("INFO after"));
        assert_eq!(slice("a\nb\nc", Some(start), None, 2), "b\nc");
        assert_eq!(parse("2026-01-01 12:00:00.123 x"), None);
    }
}
