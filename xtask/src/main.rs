//! `cargo xtask`: the project's multi-step chores (set-up, wheel, checks, demo, benchmarks).
//!
//! It owns everything under `target/cjm/` and `target/wheels/`; it never edits sources.
//! Every child command is echoed to stderr (`$ cargo …`) and runs with inherited stdio;
//! stdout carries only data (the wheel path). Exit codes: 0 ok, 1 a step failed, 2 usage.

mod cmd;
mod fuzz;
mod junit;
mod paths;
mod run;
mod setup;
mod test;
mod tidy;
mod wheel;

use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;

use anyhow::Result;

use crate::paths::Paths;
use crate::wheel::Profile;

const HELP: &str = "\
Usage: cargo xtask <verb> [options]

Verbs:
  setup               create the tools venv (target/cjm/tools) and the test venv (target/cjm/venv)
  wheel [--debug]     build the cjm-worker wheel (release unless --debug), install it into the test venv
  test [--no-lint]    tidy, fmt, clippy, rustdoc, cargo-deny, setup, wheel, Rust tests (nextest; cjm-proxy's
                      again on forked workers), doctests, Python tests (pytest), 30 s of fuzzing
  e2e                 setup, wheel, every integration test (each crate's tests/it, and tests/: the fault
                      suite that kills a host process in every state), Python tests
  demo [-- ARGS]      setup, release wheel, run the `demo` example of the cjm crate
  bench [-- ARGS]     setup, release wheel, run cjm-bench (writes bench/results.json)
  help                print this list

Exit codes: 0 ok, 1 a step failed, 2 usage error.
";

/// A command line that doesn't parse; `main` exits with 2 for it.
#[derive(Debug)]
struct Usage(String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A failed step with the next thing to try, printed as `hint:` after the error chain.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    hint: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    /// For `.context(…)`: anyhow finds it there by its type, so it must not be wrapped
    /// in an `anyhow::Error` first.
    pub(crate) fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// An error whose `hint:` line tells the reader what to do next.
pub(crate) fn failure(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    Failure::new(message, hint).into()
}

/// The hint of the `Failure` in `err`, attached directly or as context.
fn hint(err: &anyhow::Error) -> Option<&str> {
    err.downcast_ref::<Failure>()
        .or_else(|| err.chain().find_map(|e| e.downcast_ref::<Failure>()))
        .map(|failure| failure.hint.as_str())
}

#[derive(Debug, PartialEq, Eq)]
enum Verb {
    Help,
    Setup,
    Wheel(Profile),
    Test { lint: bool },
    E2e,
    Demo(Vec<OsString>),
    Bench(Vec<OsString>),
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match parse(args).and_then(execute) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", chain.join(": "));
            if let Some(hint) = hint(&err) {
                eprintln!("hint: {hint}");
            }
            if err.downcast_ref::<Usage>().is_some() {
                eprintln!("hint: run `cargo xtask help` for the list of verbs");
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn parse(args: Vec<OsString>) -> Result<Verb> {
    let mut args = args.into_iter();
    let Some(verb) = args.next() else {
        return Ok(Verb::Help);
    };
    let verb = verb
        .into_string()
        .map_err(|v| Usage(format!("verb `{}` is not UTF-8", v.display())))?;
    let rest: Vec<OsString> = args.collect();
    let flags = || -> Result<Vec<String>> {
        rest.iter()
            .map(|a| {
                a.clone()
                    .into_string()
                    .map_err(|a| Usage(format!("argument `{}` is not UTF-8", a.display())).into())
            })
            .collect()
    };
    let verb = match verb.as_str() {
        "help" | "-h" | "--help" => Verb::Help,
        "setup" => {
            no_flags(&verb, &flags()?)?;
            Verb::Setup
        }
        "wheel" => {
            let mut profile = Profile::Release;
            for flag in flags()? {
                match flag.as_str() {
                    "--release" => profile = Profile::Release,
                    "--debug" => profile = Profile::Debug,
                    _ => return Err(unknown_flag(&verb, &flag)),
                }
            }
            Verb::Wheel(profile)
        }
        "test" => {
            let mut lint = true;
            for flag in flags()? {
                match flag.as_str() {
                    "--no-lint" => lint = false,
                    _ => return Err(unknown_flag(&verb, &flag)),
                }
            }
            Verb::Test { lint }
        }
        "e2e" => {
            no_flags(&verb, &flags()?)?;
            Verb::E2e
        }
        "demo" => Verb::Demo(passthrough(&verb, rest)?),
        "bench" => Verb::Bench(passthrough(&verb, rest)?),
        _ => return Err(Usage(format!("unknown verb `{verb}`")).into()),
    };
    Ok(verb)
}

fn no_flags(verb: &str, flags: &[String]) -> Result<()> {
    match flags.first() {
        Some(flag) => Err(unknown_flag(verb, flag)),
        None => Ok(()),
    }
}

fn unknown_flag(verb: &str, flag: &str) -> anyhow::Error {
    Usage(format!("`cargo xtask {verb}` does not take `{flag}`")).into()
}

/// Arguments for the program a verb runs must follow `--`, so a typo in a flag meant for
/// xtask is not silently handed to the demo.
fn passthrough(verb: &str, rest: Vec<OsString>) -> Result<Vec<OsString>> {
    let mut rest = rest.into_iter();
    match rest.next() {
        None => Ok(Vec::new()),
        Some(first) if first == "--" => Ok(rest.collect()),
        Some(first) => Err(Usage(format!(
            "`cargo xtask {verb}` passes arguments on only after `--`, got `{}`",
            first.display()
        ))
        .into()),
    }
}

fn execute(verb: Verb) -> Result<()> {
    let paths = Paths::discover()?;
    match verb {
        Verb::Help => {
            #[expect(clippy::print_stdout, reason = "help is what the user asked to see")]
            {
                print!("{HELP}");
            }
            Ok(())
        }
        Verb::Setup => setup::setup(&paths),
        Verb::Wheel(profile) => {
            setup::setup(&paths)?;
            let wheel = wheel::build_and_install(&paths, profile)?;
            #[expect(clippy::print_stdout, reason = "the wheel path is this verb's output")]
            {
                println!("{}", wheel.display());
            }
            Ok(())
        }
        Verb::Test { lint } => test::test(&paths, lint),
        Verb::E2e => test::e2e(&paths),
        Verb::Demo(args) => run::demo(&paths, &args),
        Verb::Bench(args) => run::bench(&paths, &args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(args: &[&str], expected: &Verb) {
        let args = args.iter().map(OsString::from).collect();
        assert_eq!(&parse(args).unwrap(), expected);
    }

    #[track_caller]
    fn check_usage_error(args: &[&str], expected: &str) {
        let args = args.iter().map(OsString::from).collect();
        let err = parse(args).unwrap_err();
        assert!(
            err.downcast_ref::<Usage>().is_some(),
            "not a usage error: {err}"
        );
        assert_eq!(err.to_string(), expected);
    }

    #[test]
    fn verbs_and_flags_parse() {
        check(&[], &Verb::Help);
        check(&["help"], &Verb::Help);
        check(&["--help"], &Verb::Help);
        check(&["setup"], &Verb::Setup);
        check(&["wheel"], &Verb::Wheel(Profile::Release));
        check(&["wheel", "--release"], &Verb::Wheel(Profile::Release));
        check(&["wheel", "--debug"], &Verb::Wheel(Profile::Debug));
        check(&["test"], &Verb::Test { lint: true });
        check(&["test", "--no-lint"], &Verb::Test { lint: false });
        check(&["e2e"], &Verb::E2e);
        check(&["demo"], &Verb::Demo(vec![]));
        check(
            &["demo", "--", "--fast"],
            &Verb::Demo(vec!["--fast".into()]),
        );
        check(&["bench", "--"], &Verb::Bench(vec![]));
    }

    #[test]
    fn hints_are_found_directly_and_under_context() {
        let direct = failure("step failed", "do this");
        assert_eq!(hint(&direct), Some("do this"));
        let as_context =
            anyhow::anyhow!("`cmd` failed").context(Failure::new("step failed", "do that"));
        assert_eq!(as_context.to_string(), "step failed");
        assert_eq!(hint(&as_context), Some("do that"));
        let under_more_context = direct.context("while testing");
        assert_eq!(hint(&under_more_context), Some("do this"));
        assert_eq!(hint(&anyhow::anyhow!("plain")), None);
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        check_usage_error(&["tset"], "unknown verb `tset`");
        check_usage_error(&["setup", "-v"], "`cargo xtask setup` does not take `-v`");
        check_usage_error(
            &["test", "--nolint"],
            "`cargo xtask test` does not take `--nolint`",
        );
        check_usage_error(
            &["demo", "--fast"],
            "`cargo xtask demo` passes arguments on only after `--`, got `--fast`",
        );
    }
}
