//! The `SQLite` store's files beside the database: the host lock
//! (`<file>.lock`) and the results too large to keep inline
//! (`<file>.results/<job number>`).

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::blob;
use crate::error::QueueError;

/// Takes `<path>.lock` for this host, or says who holds it.
pub(super) fn host_lock(path: &Path) -> Result<std::fs::File, QueueError> {
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let io = |action, source| QueueError::Io {
        path: lock_path.clone(),
        action,
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| io("open", e))?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(QueueError::Busy {
                path: path.to_owned(),
                holder: if holder.trim().is_empty() {
                    "a process that has not said which".to_owned()
                } else {
                    holder.trim().to_owned()
                },
            });
        }
        return Err(io("lock", err));
    }
    file.set_len(0).map_err(|e| io("write", e))?;
    file.rewind().map_err(|e| io("write", e))?;
    writeln!(file, "pid {}", std::process::id()).map_err(|e| io("write", e))?;
    Ok(file)
}

/// A result kept in a file of its own in `dir`; why not, in words.
pub(super) fn read_result(dir: &Path, name: &str) -> Result<cjm_proto::Value, String> {
    let path = dir.join(name);
    let bytes =
        fs_err::read(&path).map_err(|e| format!("its result file {}: {e}", path.display()))?;
    blob::decode(&bytes).map_err(|e| format!("its result: {e}"))
}

/// Writes job `seq`'s large result to its own file in `dir`; the name the
/// row keeps.
pub(super) fn keep_result(dir: &Path, seq: i64, bytes: &[u8]) -> Result<String, QueueError> {
    let name = seq.to_string();
    let io = |action, source| QueueError::Io {
        path: dir.to_owned(),
        action,
        source,
    };
    fs_err::create_dir_all(dir).map_err(|e| io("create", e))?;
    // Written whole under a temporary name, then renamed: never half a result.
    let tmp = dir.join(format!("{name}.tmp"));
    fs_err::write(&tmp, bytes).map_err(|e| io("write a result into", e))?;
    fs_err::rename(&tmp, dir.join(&name)).map_err(|e| io("write a result into", e))?;
    Ok(name)
}
