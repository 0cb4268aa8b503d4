use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use cjm_proxy::StartMethod;

use crate::support::{alive, eventually, fixtures, ppid, python, start_method};

/// SIGKILLs a host whose worker, started the suite's way, is in `mode` and checks
/// that the worker and the grandchild its plugin started are gone. The time it
/// took is printed; the bench reports it against the 100 ms target.
#[track_caller]
fn check(mode: &str) {
    match start_method() {
        StartMethod::Spawn => check_with(mode, "spawn"),
        StartMethod::Forkserver => check_with(mode, "forkserver"),
    }
}

#[track_caller]
fn check_with(mode: &str, start_method: &str) {
    let mut host = Command::new(env!("CARGO_BIN_EXE_cjm-proxy-fixture-host"))
        .env("CJM_TEST_START_METHOD", start_method)
        .arg(python())
        .arg(fixtures())
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the fixture host");
    let mut line = String::new();
    BufReader::new(host.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read pids");
    let pids: Vec<i32> = line
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    let [worker, grandchild] = pids[..] else {
        panic!("bad pid line {line:?}")
    };
    assert!(
        alive(worker) && alive(grandchild),
        "{mode}: both run before the host dies"
    );
    let parent = ppid(worker);
    let host_pid = i32::try_from(host.id()).expect("pid");
    if start_method == "forkserver" {
        assert_ne!(parent, host_pid, "forked by a forkserver");
        assert_eq!(ppid(parent), host_pid, "the forkserver is the host's child");
    } else {
        assert_eq!(parent, host_pid, "executed by the host");
    }
    host.kill().expect("SIGKILL the host");
    host.wait().expect("reap the host");
    let took = eventually(Duration::from_secs(5), || {
        !alive(worker) && !alive(grandchild) && (parent == host_pid || !alive(parent))
    });
    let took = took.unwrap_or_else(|| {
        panic!(
            "{mode}: worker {worker}, grandchild {grandchild} or forkserver {parent} survived its host"
        )
    });
    eprintln!("{mode}: worker and grandchild gone {took:?} after the host died");
}

#[test]
fn worker_exits_when_host_dies_while_idle() {
    check("idle");
}

#[test]
fn worker_exits_when_host_dies_while_busy_in_a_c_call() {
    check("c_call");
}

#[test]
fn worker_exits_when_host_dies_while_busy_in_pure_python() {
    check("pure_python");
}

// These two are about forked workers whatever the suite's start method: the
// forkserver must die with the host too.
#[test]
fn forked_worker_and_its_forkserver_exit_when_host_dies_while_idle() {
    check_with("idle", "forkserver");
}

#[test]
fn forked_worker_and_its_forkserver_exit_when_host_dies_while_busy_in_a_c_call() {
    check_with("c_call", "forkserver");
}

/// A grandchild that left the worker's process group (`setsid`) dies with its host
/// too, where the machine gives each worker a cgroup v2 of its own; elsewhere it
/// is the documented limit (docs/ARCHITECTURE.md, "Cancellation and death").
#[test]
fn a_setsid_grandchild_dies_with_its_host_where_workers_get_cgroups() {
    if let Err(why) = cjm_proxy::cgroup_isolation() {
        eprintln!("no worker cgroups here ({why}): the setsid case is not checked");
        return;
    }
    check("setsid");
    check_with("setsid", "forkserver");
}
