//! The start log: before a job's `execute` is sent, its number is appended to
//! `<queue file>.started` with one `write(2)`, which survives the process
//! being killed the moment after (the page cache keeps it). It is what tells
//! the next host which jobs had started when this one died, so that the store
//! need not commit a start before the job runs: the store learns of starts in
//! batches, after the fact, and a job start costs a system call, not a commit.
//!
//! Entries are 8-byte little-endian job numbers; a torn last entry is ignored.
//! A negative entry takes its job back (its try failed and it is put back to
//! run again): read in order, the log names the jobs whose last start was not
//! taken back.
//! The log is emptied once the next host has settled what it names, and
//! rewritten with only the unsettled entries when it grows past
//! [`ROTATE_BYTES`].

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::QueueError;
use crate::lock;

/// The size past which the log is rewritten with only its unsettled entries.
const ROTATE_BYTES: u64 = 1 << 20;

/// The log, and the started jobs whose end the store has not committed yet.
#[derive(Debug)]
pub(crate) struct StartLog {
    path: PathBuf,
    state: std::sync::Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    len: u64,
    unsettled: HashSet<i64>,
}

impl StartLog {
    /// The log beside the queue file `queue`, and what it holds from before.
    pub(crate) fn open(queue: &Path) -> Result<(Self, Vec<i64>), QueueError> {
        let path = PathBuf::from(format!("{}.started", queue.display()));
        let io = |action, source| QueueError::Io {
            path: path.clone(),
            action,
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io("open", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io("read", e))?;
        let mut named = HashSet::new();
        for entry in bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        {
            if entry < 0 {
                named.remove(&-entry);
            } else {
                named.insert(entry);
            }
        }
        let mut started: Vec<i64> = named.into_iter().collect();
        started.sort_unstable();
        let len = bytes.len() as u64;
        Ok((
            Self {
                path,
                state: std::sync::Mutex::new(State {
                    file,
                    len,
                    unsettled: HashSet::new(),
                }),
            },
            started,
        ))
    }

    /// Forgets everything it holds (once the store has settled it).
    pub(crate) fn clear(&self) -> Result<(), QueueError> {
        let mut s = lock(&self.state);
        s.file.set_len(0).map_err(|source| QueueError::Io {
            path: self.path.clone(),
            action: "empty",
            source,
        })?;
        s.len = 0;
        Ok(())
    }

    /// Records that job `seq` starts; durable against a kill once this returns.
    pub(crate) fn started(&self, seq: i64) -> Result<(), QueueError> {
        self.append(seq)
    }

    /// Takes job `seq`'s start back: its try failed and it is to run again,
    /// so a host that dies from now on did not interrupt it.
    pub(crate) fn taken_back(&self, seq: i64) -> Result<(), QueueError> {
        self.append(-seq)
    }

    fn append(&self, entry: i64) -> Result<(), QueueError> {
        let mut s = lock(&self.state);
        s.file
            .write_all(&entry.to_le_bytes())
            .map_err(|source| QueueError::Io {
                path: self.path.clone(),
                action: "append to",
                source,
            })?;
        s.len += 8;
        if entry < 0 {
            s.unsettled.remove(&-entry);
        } else {
            s.unsettled.insert(entry);
        }
        if s.len > ROTATE_BYTES {
            self.rotate(&mut s);
        }
        Ok(())
    }

    /// Job `seq`'s end is committed: it need not be named any more.
    pub(crate) fn settled(&self, seq: i64) {
        lock(&self.state).unsettled.remove(&seq);
    }

    /// Rewrites the log with only its unsettled entries (through a new file
    /// renamed over it, so it is always whole).
    fn rotate(&self, s: &mut State) {
        let tmp = PathBuf::from(format!("{}.tmp", self.path.display()));
        let bytes: Vec<u8> = s.unsettled.iter().flat_map(|q| q.to_le_bytes()).collect();
        let rotated = fs_err::write(&tmp, &bytes)
            .and_then(|()| fs_err::rename(&tmp, &self.path))
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(&self.path)
            });
        match rotated {
            Ok(file) => {
                s.file = file;
                s.len = bytes.len() as u64;
            }
            Err(e) => tracing::warn!(
                "cannot rewrite the job queue's start log {} ({e}); it keeps growing",
                self.path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_started_is_read_back_and_a_torn_entry_ignored() {
        let dir = cjm_testkit::Scratch::new("startlog");
        let queue = dir.join("q.db");
        let (log, before) = StartLog::open(&queue).unwrap();
        assert!(before.is_empty());
        log.started(7).unwrap();
        log.started(9).unwrap();
        log.settled(7);
        drop(log);
        // A torn write at the end: half an entry.
        let path = dir.join("q.db.started");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        let (log, before) = StartLog::open(&queue).unwrap();
        assert_eq!(before, [7, 9]);
        log.clear().unwrap();
        // A start taken back (a retry) names its job no more, until it
        // starts again.
        log.started(3).unwrap();
        log.started(4).unwrap();
        log.taken_back(3).unwrap();
        log.taken_back(4).unwrap();
        log.started(4).unwrap();
        drop(log);
        let (log, before) = StartLog::open(&queue).unwrap();
        assert_eq!(before, [4]);
        log.clear().unwrap();
        drop(log);
        assert!(StartLog::open(&queue).unwrap().1.is_empty());
    }

    #[test]
    fn a_rotation_keeps_only_the_unsettled_entries() {
        let dir = cjm_testkit::Scratch::new("startlog-rotate");
        let queue = dir.join("q.db");
        let (log, _) = StartLog::open(&queue).unwrap();
        let n = ROTATE_BYTES / 8 + 10;
        for seq in 0..n as i64 {
            log.started(seq).unwrap();
            if seq != 5 {
                log.settled(seq);
            }
        }
        drop(log);
        let (_, left) = StartLog::open(&queue).unwrap();
        assert!(left.contains(&5), "the unsettled entry survives rotation");
        assert!(left.len() < 100, "{} entries", left.len());
    }
}
