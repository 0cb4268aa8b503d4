use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

pub(crate) use cjm_testkit::python;

/// A scratch folder, unique to the test, removed on drop.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cjm-stores-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        _ = fs_err::remove_dir_all(&dir);
        fs_err::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        _ = fs_err::remove_dir_all(&self.0);
    }
}

/// The reference's stores in a Python process, one JSON command a line.
pub(crate) struct Reference {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Reference {
    pub(crate) fn start() -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/reference_driver.py");
        let mut child = Command::new(python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut reference = Self {
            child,
            stdin,
            stdout,
        };
        assert_eq!(reference.call(&json!({"op": "ping"})), "pong");
        reference
    }

    /// Sends `command` without waiting for its answer.
    pub(crate) fn send(&mut self, command: &Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// The answer to the oldest command sent and not yet answered.
    pub(crate) fn receive(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let mut answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the driver answered {line:?}: {e}"));
        match answer.get_mut("ok") {
            Some(ok) => Ok(ok.take()),
            None => Err(answer["error"].as_str().unwrap_or_default().to_owned()),
        }
    }

    /// Runs `command`, failing the test if the reference raised.
    #[track_caller]
    pub(crate) fn call(&mut self, command: &Value) -> Value {
        self.send(command);
        self.receive()
            .unwrap_or_else(|error| panic!("the reference raised on {command}: {error}"))
    }

    /// The rows `query` selects, read with Python's `sqlite3`.
    #[track_caller]
    pub(crate) fn sql(&mut self, db: &Path, query: &str) -> Vec<Vec<Value>> {
        let rows = self.call(&json!({"op": "sql", "db": db, "query": query}));
        serde_json::from_value(rows).unwrap()
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        // End of input ends the driver's loop.
        drop(self.stdin.take());
        _ = self.child.wait();
    }
}
