//! The forkserver's messages: what a host asks the forkserver of a plugin's
//! interpreter (`python -m cjm_worker._forkserver`) and what it answers, one
//! `SOCK_SEQPACKET` packet each.
//!
//! Only the bytes live here: the descriptors a request carries and the processes
//! the answers name are the caller's. The server (`cjm_worker/_forkserver.py`)
//! reads and writes the same format without importing anything a worker would
//! not (no `json`, no `socket`), so it is plain text; both sides are tested
//! against the same bytes in `tests/fixtures/forkserver/`.
//!
//! From the host, with [`FDS_PER_REQUEST`] descriptors (the worker's end of its
//! channel, its stdout, its stderr, and a memfd with its environment), at most
//! [`MAX_REQUEST`] bytes:
//!
//! - `spawn NUL ID NUL MODULE NUL CLASS NUL CWD` ([`SpawnRequest`]).
//!
//! To the host, fields separated by single spaces ([`ForkReply`]):
//!
//! - `ready PROTOCOL PID PYTHON_VERSION` once, when the server is warm; a server
//!   from before [`FORK_PROTOCOL`] sent `ready PID PYTHON_VERSION`;
//! - `spawned ID PID` or `failed ID REASON` for each request;
//! - `exited PID STATUS` when a child ends (STATUS is the raw wait status).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::error::ProtoError;

/// A number field of a reply.
fn number<T: std::str::FromStr>(field: Option<&str>, what: &'static str) -> Result<T, ProtoError> {
    field
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| ProtoError::malformed(what, 0))
}

/// The forkserver protocol this side speaks, named in the server's greeting.
pub const FORK_PROTOCOL: &str = "cjm-fork/1";

/// The largest request the server reads (its receive buffer).
pub const MAX_REQUEST: usize = 64 * 1024;

/// The descriptors every spawn request carries.
pub const FDS_PER_REQUEST: usize = 4;

/// A request to fork one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnRequest {
    /// The request's id, which its answer names.
    pub id: u64,
    /// The module that defines the plugin class.
    pub module: String,
    /// The plugin class.
    pub class: String,
    /// The worker's working directory.
    pub cwd: PathBuf,
}

impl SpawnRequest {
    /// The request's packet.
    pub fn encode(&self) -> Result<Vec<u8>, ProtoError> {
        let fields: [&[u8]; 3] = [
            self.module.as_bytes(),
            self.class.as_bytes(),
            self.cwd.as_os_str().as_bytes(),
        ];
        if fields.iter().any(|f| f.contains(&0)) {
            return Err(ProtoError::Unencodable(
                "a module, class or directory name that holds a NUL byte".into(),
            ));
        }
        let mut body = b"spawn\0".to_vec();
        body.extend_from_slice(self.id.to_string().as_bytes());
        for f in fields {
            body.push(0);
            body.extend_from_slice(f);
        }
        if body.len() > MAX_REQUEST {
            return Err(ProtoError::Unencodable(format!(
                "a forkserver request of {} bytes (at most {MAX_REQUEST})",
                body.len()
            )));
        }
        Ok(body)
    }

    /// Reads a request's packet.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let malformed = |what| ProtoError::malformed(what, 0);
        let fields: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
        let [kind, id, module, class, cwd] = fields[..] else {
            return Err(malformed("a spawn request has five NUL-separated fields"));
        };
        if kind != b"spawn" {
            return Err(malformed("not a spawn request"));
        }
        let text = |f: &[u8], what| {
            std::str::from_utf8(f)
                .map(str::to_owned)
                .map_err(|_| malformed(what))
        };
        Ok(Self {
            id: text(id, "a request id that is not text")?
                .parse()
                .map_err(|_| malformed("a request id that is not a number"))?,
            module: text(module, "a module name that is not UTF-8")?,
            class: text(class, "a class name that is not UTF-8")?,
            cwd: PathBuf::from(OsStr::from_bytes(cwd)),
        })
    }
}

/// What the server says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForkReply {
    /// The server is warm and serves requests.
    Ready {
        /// The protocol it speaks; `None` from a server older than
        /// [`FORK_PROTOCOL`], whose greeting named none.
        protocol: Option<String>,
        /// The server's pid.
        pid: u32,
        /// Its interpreter's version (`3.11.7`).
        python: String,
    },
    /// Request `id` became worker `pid`.
    Spawned {
        /// The request.
        id: u64,
        /// The worker's pid.
        pid: u32,
    },
    /// Request `id` gave no worker.
    Failed {
        /// The request.
        id: u64,
        /// Why, in the server's words.
        reason: String,
    },
    /// Worker `pid` ended.
    Exited {
        /// The worker.
        pid: u32,
        /// Its raw wait status.
        status: i32,
    },
}

impl ForkReply {
    /// The answer's packet.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Ready {
                protocol: Some(protocol),
                pid,
                python,
            } => format!("ready {protocol} {pid} {python}"),
            Self::Ready {
                protocol: None,
                pid,
                python,
            } => format!("ready {pid} {python}"),
            Self::Spawned { id, pid } => format!("spawned {id} {pid}"),
            Self::Failed { id, reason } => format!("failed {id} {reason}"),
            Self::Exited { pid, status } => format!("exited {pid} {status}"),
        }
        .into_bytes()
    }

    /// Reads an answer's packet.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let malformed = |what| ProtoError::malformed(what, 0);
        let text = std::str::from_utf8(bytes)
            .map_err(|_| malformed("a forkserver reply that is not UTF-8"))?;
        let (kind, rest) = text.split_once(' ').unwrap_or((text, ""));
        let mut fields = rest.splitn(2, ' ');
        let (first, second) = (fields.next(), fields.next());
        match kind {
            "ready" => {
                let mut all = rest.split(' ');
                let (protocol, pid, python) = match (all.next(), all.next(), all.next()) {
                    (Some(pid), Some(python), None) => (None, pid, python),
                    (Some(protocol), Some(pid), Some(python)) => {
                        (Some(protocol.to_owned()), pid, python)
                    }
                    _ => return Err(malformed("a ready greeting without its fields")),
                };
                Ok(Self::Ready {
                    protocol,
                    pid: number(Some(pid), "a ready greeting whose pid is not a number")?,
                    python: python.to_owned(),
                })
            }
            "spawned" => Ok(Self::Spawned {
                id: number(first, "a spawned reply whose id is not a number")?,
                pid: number(second, "a spawned reply whose pid is not a number")?,
            }),
            "failed" => Ok(Self::Failed {
                id: number(first, "a failed reply whose id is not a number")?,
                reason: second.unwrap_or_default().to_owned(),
            }),
            "exited" => Ok(Self::Exited {
                pid: number(first, "an exited reply whose pid is not a number")?,
                status: number(second, "an exited reply whose status is not a number")?,
            }),
            _ => Err(malformed("an unknown forkserver reply")),
        }
    }
}
