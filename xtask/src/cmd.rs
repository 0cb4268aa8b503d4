//! Running child commands: echoed to stderr first, inherited stdio, status checked.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};

/// One child command, as it is echoed and as it is run.
#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    program: OsString,
    /// How the program is echoed: `cargo` rather than the path in `$CARGO`.
    shown_as: String,
    args: Vec<OsString>,
    envs: Vec<(String, OsString)>,
    cwd: PathBuf,
    stdout_to_stderr: bool,
}

/// How a finished command ended when it did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

impl Cmd {
    pub(crate) fn new(program: impl Into<OsString>, cwd: &Path) -> Self {
        let program = program.into();
        let shown_as = show_token(&program, cwd);
        Self {
            program,
            shown_as,
            args: Vec::new(),
            envs: Vec::new(),
            cwd: cwd.to_path_buf(),
            stdout_to_stderr: false,
        }
    }

    /// The cargo that runs xtask (`$CARGO`), so children use the same toolchain.
    pub(crate) fn cargo(cwd: &Path) -> Self {
        let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Self::new(program, cwd);
        "cargo".clone_into(&mut cmd.shown_as);
        cmd
    }

    pub(crate) fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub(crate) fn args<I>(mut self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.envs.push((key.to_owned(), value.into()));
        self
    }

    /// Sends the child's stdout to our stderr, for verbs whose own stdout is data.
    pub(crate) fn stdout_to_stderr(mut self) -> Self {
        self.stdout_to_stderr = true;
        self
    }

    /// The command line as a shell would take it, paths inside the workspace shortened.
    pub(crate) fn display(&self) -> String {
        let mut words: Vec<String> = self
            .envs
            .iter()
            .map(|(k, v)| format!("{k}={}", show_token(v, &self.cwd)))
            .collect();
        words.push(self.shown_as.clone());
        words.extend(self.args.iter().map(|a| show_token(a, &self.cwd)));
        words.join(" ")
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).current_dir(&self.cwd);
        for (k, v) in &self.envs {
            command.env(k, v);
        }
        command
    }

    /// Echoes the command, runs it with inherited stdio and fails unless it exits 0.
    pub(crate) fn run(&self) -> Result<()> {
        match self.status()? {
            Ok(()) => Ok(()),
            Err(exit) => bail!("`{}` {exit}", self.display()),
        }
    }

    /// Echoes the command and runs it; `Err(exit)` inside says how it failed.
    pub(crate) fn status(&self) -> Result<Result<(), Exit>> {
        eprintln!("$ {}", self.display());
        let mut command = self.command();
        if self.stdout_to_stderr {
            let stderr = io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .context("duplicating stderr")?;
            command.stdout(stderr);
        }
        let status = command.status().map_err(|e| self.spawn_error(&e))?;
        Ok(check(status))
    }

    /// Runs the command quietly and returns its stdout; stderr is kept for the error.
    pub(crate) fn read(&self) -> Result<String> {
        let output = self
            .command()
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(&e))?;
        if let Err(exit) = check(output.status) {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!("`{}` {exit}: {}", self.display(), stderr.trim_end());
        }
        String::from_utf8(output.stdout)
            .with_context(|| format!("`{}` printed something that is not UTF-8", self.display()))
    }

    fn spawn_error(&self, err: &io::Error) -> anyhow::Error {
        let what = if err.kind() == io::ErrorKind::NotFound {
            "program not found".to_owned()
        } else {
            err.to_string()
        };
        anyhow::anyhow!("could not start `{}`: {what}", self.display())
    }
}

fn check(status: ExitStatus) -> Result<(), Exit> {
    if status.success() {
        Ok(())
    } else if let Some(code) = status.code() {
        Err(Exit::Code(code))
    } else {
        // No code means a signal on Unix; -1 is never a signal number.
        Err(Exit::Signal(status.signal().unwrap_or(-1)))
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "failed with exit status {code}"),
            Exit::Signal(signal) => write!(f, "was killed by signal {signal}"),
        }
    }
}

/// One word of an echoed command line: relative to `cwd` when inside it, quoted when a
/// shell would split or expand it.
fn show_token(word: &OsStr, cwd: &Path) -> String {
    let path = Path::new(word);
    let word = match path.strip_prefix(cwd) {
        Ok(rel) if path.is_absolute() && !rel.as_os_str().is_empty() => rel.to_string_lossy(),
        _ => word.to_string_lossy(),
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_shortens_workspace_paths_and_quotes_shell_words() {
        let root = Path::new("/repo");
        let cmd = Cmd::cargo(root)
            .env("CJM_PYTHON", "/repo/target/cjm/venv/bin/python")
            .args(["nextest", "run", "-E", "kind(test)", "/elsewhere/x", "it's"]);
        assert_eq!(
            cmd.display(),
            "CJM_PYTHON=target/cjm/venv/bin/python cargo nextest run -E 'kind(test)' \
             /elsewhere/x 'it'\\''s'"
        );
    }

    #[test]
    fn failures_name_the_command_and_how_it_ended() {
        let root = std::env::temp_dir();
        let err = Cmd::new("sh", &root)
            .args(["-c", "exit 3"])
            .run()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`sh -c 'exit 3'` failed with exit status 3"
        );
        let err = Cmd::new("sh", &root)
            .args(["-c", "kill -9 $$"])
            .run()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`sh -c 'kill -9 $$'` was killed by signal 9"
        );
        let err = Cmd::new("no-such-program-xtask", &root).run().unwrap_err();
        assert_eq!(
            err.to_string(),
            "could not start `no-such-program-xtask`: program not found"
        );
    }
}
