//! A worker's output: its log file (appended, rotated by size, stamped), the two
//! threads that copy its stdout and stderr there and to events, the stderr tail a
//! death is explained with, and the bounded wait for them to drain.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use cjm_core::SharedClock;

use crate::child::Stream;
use crate::deadline::Deadline;
use crate::event::{Event, EventHub};
use crate::lock::lock;
use crate::spec::WorkerSpec;

/// How many of the last stderr lines a death or a failed start reports (a
/// worker's and a forkserver's alike).
const STDERR_TAIL_LINES: usize = 20;

/// The last lines a process wrote to stderr: filled by the thread that reads
/// them, read by whoever explains how the process ended.
#[derive(Clone, Default)]
pub(crate) struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    pub(crate) fn push(&self, line: String) {
        let mut t = lock(&self.0);
        if t.len() == STDERR_TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        let t = lock(&self.0);
        t.iter().cloned().collect()
    }
}

/// Opens the spec's log file (and its folder) and writes the start header; `None`
/// when the spec names none or it cannot be opened (the worker runs without one).
pub(crate) fn open_log(spec: &WorkerSpec) -> Option<LogFile> {
    let path = spec.log_file.as_ref()?;
    if let Some(dir) = path.parent() {
        let _ = fs_err::create_dir_all(dir);
    }
    let mut log = LogFile::open(path.clone(), SharedClock::clone(&spec.clock))
        .map_err(|e| tracing::warn!(error = %e, "cannot open the worker's log file"))
        .ok()?;
    let started = log_stamp(spec.clock.wall());
    log.write(format!("\n--- Starting {} at {started} ---\n", spec.plugin).as_bytes());
    Some(log)
}

/// A worker's log past this size is rotated: renamed to `<name>.log.1`
/// (replacing the one before) and started afresh, so one plugin's log takes at
/// most about twice this on disk and the newest output is always kept.
pub const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;

/// How often (in bytes written) the file's real size is looked at: several
/// workers of one plugin append to the same file.
const LOG_CHECK_EVERY: u64 = 64 * 1024;

/// The longest piece of one line handled at once; a longer line is written in
/// pieces, so a worker that prints without newlines cannot make the host buffer
/// without bound.
const LOG_LINE_PIECE: u64 = 64 * 1024;

/// An appended log file that rotates by size.
pub(crate) struct LogFile {
    path: PathBuf,
    file: fs_err::File,
    since_check: u64,
    /// Where the rotation notes' stamps come from (the spec's clock).
    clock: SharedClock,
}

impl LogFile {
    fn open(path: PathBuf, clock: SharedClock) -> std::io::Result<Self> {
        let file = Self::append(&path)?;
        let mut log = Self {
            path,
            file,
            // Look at the size before the first write.
            since_check: LOG_CHECK_EVERY,
            clock,
        };
        log.check();
        Ok(log)
    }

    fn append(path: &Path) -> std::io::Result<fs_err::File> {
        fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    }

    fn write(&mut self, bytes: &[u8]) {
        let _ = self.file.write_all(bytes);
        self.since_check += bytes.len() as u64;
        if self.since_check >= LOG_CHECK_EVERY {
            self.check();
        }
    }

    /// Rotates the file when it is too large, and follows a rotation another
    /// worker of the plugin did.
    fn check(&mut self) {
        use std::os::unix::fs::MetadataExt;
        self.since_check = 0;
        let (Ok(mine), at_path) = (self.file.metadata(), fs_err::metadata(&self.path)) else {
            return;
        };
        let rotated_by_another =
            at_path.is_ok_and(|m| m.ino() != mine.ino() || m.dev() != mine.dev());
        if rotated_by_another {
            if let Ok(f) = Self::append(&self.path) {
                self.file = f;
            }
            return;
        }
        if mine.len() <= LOG_ROTATE_BYTES {
            return;
        }
        let mut old = self.path.as_os_str().to_owned();
        old.push(".1");
        if fs_err::rename(&self.path, PathBuf::from(&old)).is_ok()
            && let Ok(mut f) = Self::append(&self.path)
        {
            let _ = writeln!(
                f,
                "--- log rotated at {} after {} bytes; the part before is in {} ---",
                log_stamp(self.clock.wall()),
                mine.len(),
                Path::new(&old).display()
            );
            self.file = f;
        }
    }
}

/// The time written in the log's `--- Starting … at … ---` header and rotation
/// notes: ISO-8601 in UTC, to the second (`2026-01-01T00:00:00+00:00`).
fn log_stamp(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    cjm_core::isoformat_utc(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Starts one thread per stream that copies its lines to the log file, to
/// [`Event::Output`] and (stderr) to `tail`; the receiver hears once from each
/// thread when its stream has ended.
pub(crate) fn start_log_threads(
    streams: [Option<Stream>; 2],
    log: Option<LogFile>,
    events: &EventHub,
    tail: &StderrTail,
    plugin: &str,
) -> mpsc::Receiver<()> {
    let (done_tx, done_rx) = mpsc::channel();
    let log = log.map(|f| Arc::new(Mutex::new(f)));
    let [stdout, stderr] = streams;
    for (stream, name) in [(stdout, "stdout"), (stderr, "stderr")] {
        let Some(stream) = stream else { continue };
        let log = log.clone();
        let events = events.clone();
        let tail = tail.clone();
        let plugin = plugin.to_owned();
        let done = done_tx.clone();
        let _ = std::thread::Builder::new()
            .name(format!("cjm-{name}"))
            .spawn(move || {
                let _drained = DrainedOnDrop(done);
                let mut reader = BufReader::new(stream);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match (&mut reader)
                        .take(LOG_LINE_PIECE)
                        .read_until(b'\n', &mut line)
                    {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if let Some(log) = &log {
                        let mut f = lock(log);
                        f.write(&line);
                    }
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    if name == "stderr" {
                        tail.push(text.clone());
                    }
                    tracing::debug!(plugin = %plugin, stream = name, "{text}");
                    events.emit(&Event::Output {
                        stream: name,
                        line: text,
                    });
                }
            });
    }
    done_rx
}

/// Lets the log threads drain what the worker wrote before it died, so the stderr
/// tail explains the death. A descendant that keeps the pipes open would hold them
/// forever, so the wait is bounded.
pub(crate) fn drain_logs(logs_done: &mpsc::Receiver<()>) {
    let deadline = Deadline::real(Duration::from_millis(500));
    for _ in 0..2 {
        if deadline.recv(logs_done).is_err() {
            break;
        }
    }
}

/// Tells the waiter a log thread has drained its pipe, however the thread ends.
struct DrainedOnDrop(mpsc::Sender<()>);

impl Drop for DrainedOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}
