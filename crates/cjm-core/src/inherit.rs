//! Which of the host's environment variables reach plugin code.

/// The host variables a worker inherits, and install-time introspection too (it
/// imports the same plugin code); every other variable of the host (tokens, cloud
/// credentials, …) stays out unless the manifest's `WORKER_ENV` or the caller passes
/// it explicitly.
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LC_NUMERIC",
    "LC_TIME",
    "TZ",
    "TMPDIR",
    "TERM",
];
