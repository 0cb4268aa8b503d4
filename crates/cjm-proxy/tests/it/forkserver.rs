//! Workers forked from a forkserver: the same worker as an executed one, its exit
//! reported through the server, and exec whenever no server can be had.

use std::path::Path;
use std::time::Duration;

use cjm_core::WorkerExit;
use cjm_proto::Value;
use cjm_proxy::{StartMethod, Worker, WorkerError, WorkerSpec};

use crate::support::{alive, eventually, kw, ppid, python, s};

fn forked(class: &str) -> WorkerSpec {
    crate::support::spec(class).start_method(StartMethod::Forkserver)
}

fn executed(class: &str) -> WorkerSpec {
    crate::support::spec(class).start_method(StartMethod::Spawn)
}

/// What the worker's process looks like from inside.
fn process(w: &Worker) -> Value {
    w.execute_blocking(vec![], kw(&[("action", s("process"))]))
        .expect("process call")
}

fn int(v: &Value, key: &str) -> i64 {
    v.get(key)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{key} in {v:?}"))
}

fn ppid_of(pid: i64) -> i64 {
    i64::from(ppid(i32::try_from(pid).expect("pid")))
}

fn host_pid() -> i64 {
    i64::from(std::process::id())
}

#[test]
fn a_forked_worker_is_the_same_worker_as_an_executed_one() {
    let dir = std::env::temp_dir().join(format!("cjm-fork-same-{}", std::process::id()));
    fs_err::create_dir_all(&dir).unwrap();
    let with = |spec: WorkerSpec| {
        let mut spec = spec.env("CJM_TEST_MARK", "same");
        spec.cwd = Some(dir.clone());
        Worker::spawn(spec).unwrap()
    };
    let exec = with(executed("Echo"));
    let fork = with(forked("Echo"));
    let (a, b) = (process(&exec), process(&fork));

    assert_eq!(int(&a, "ppid"), host_pid(), "exec: the host is the parent");
    assert_ne!(
        int(&b, "ppid"),
        host_pid(),
        "fork: the forkserver is the parent"
    );
    assert_eq!(
        ppid_of(int(&b, "ppid")),
        host_pid(),
        "the forkserver is the host's child"
    );
    for v in [&a, &b] {
        assert_eq!(int(v, "pgrp"), int(v, "pid"), "each leads its own group");
    }
    for key in ["path", "cwd", "executable"] {
        assert_eq!(a.get(key), b.get(key), "{key} differs");
    }
    // The same variables and values (in whatever order).
    let env = |v: &Value| match v.get("env") {
        Some(Value::Map(pairs)) => pairs
            .iter()
            .map(|(k, v)| (format!("{k:?}"), format!("{v:?}")))
            .collect::<std::collections::BTreeMap<_, _>>(),
        other => panic!("env: {other:?}"),
    };
    assert_eq!(env(&a), env(&b));
    assert!(env(&b).keys().any(|k| k.contains("CJM_TEST_MARK")));
    // The same descriptors (0-2, the channel, the listing's own): nothing of the
    // forkserver's leaks into a worker.
    let fds = |v: &Value| match v.get("fds") {
        Some(Value::List(l)) => l.len(),
        other => panic!("fds: {other:?}"),
    };
    assert_eq!(fds(&a), fds(&b), "{a:?}\n{b:?}");
    // The same command line but for the descriptor and parent numbers.
    let argv = |v: &Value| match v.get("argv") {
        Some(Value::List(l)) => l
            .iter()
            .map(|x| x.as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>(),
        other => panic!("argv: {other:?}"),
    };
    let (argv_a, argv_b) = (argv(&a), argv(&b));
    assert_eq!(argv_a.len(), argv_b.len());
    for (i, (x, y)) in argv_a.iter().zip(&argv_b).enumerate() {
        if i > 0 && matches!(argv_a[i - 1].as_str(), "--fd" | "--ppid") {
            continue;
        }
        assert_eq!(x, y, "argv[{i}]");
    }
    exec.stop_blocking();
    fork.stop_blocking();
    let _ = fs_err::remove_dir_all(&dir);
}

#[test]
fn a_forked_worker_s_exit_status_and_stderr_reach_the_host() {
    for (how, exit) in [
        ("exit", WorkerExit::Code(3)),
        ("sigkill", WorkerExit::Signal(libc::SIGKILL)),
    ] {
        let w = Worker::spawn(forked("Crasher")).unwrap();
        assert_ne!(ppid_of(i64::from(w.pid())), host_pid(), "forked");
        let err = w.execute_blocking(vec![s(how)], vec![]).unwrap_err();
        let WorkerError::Died { death, .. } = &err else {
            panic!("{how}: {err:?}")
        };
        assert_eq!(death.exit, Some(exit), "{how}: {death}");
        assert!(
            !death.probable_oom,
            "{how}: a SIGKILL the host did not send is not memory without evidence"
        );
        assert!(
            death
                .stderr_tail
                .iter()
                .any(|l| l.contains("about to crash")),
            "{how}: {death}"
        );
    }
}

#[test]
fn a_forked_worker_stopped_by_the_host_is_reported_as_such() {
    let w = Worker::spawn(forked("Echo")).unwrap();
    let pid = i32::try_from(w.pid()).unwrap();
    let death = w.stop_blocking();
    assert!(death.killed_by_host, "{death}");
    assert!(death.exit.is_some(), "the status came back: {death}");
    assert!(!alive(pid));
}

#[test]
fn concurrent_starts_share_one_forkserver() {
    let workers: Vec<Worker> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| Worker::spawn(forked("Echo")).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let parents: std::collections::BTreeSet<i64> = workers
        .iter()
        .map(|w| {
            assert_eq!(w.execute_blocking(vec![s("hi")], vec![]).unwrap(), s("hi"));
            int(&process(w), "ppid")
        })
        .collect();
    assert_eq!(parents.len(), 1, "one server: {parents:?}");
    assert!(!parents.contains(&host_pid()));
    let pids: std::collections::BTreeSet<u32> = workers.iter().map(Worker::pid).collect();
    assert_eq!(pids.len(), workers.len());
}

#[test]
fn when_the_forkserver_dies_its_workers_die_and_the_next_start_gets_a_new_one() {
    // A startup variable of its own gives this test a server of its own.
    let spec = || forked("Echo").env("PYTHONCJMTESTSERVER", "dies");
    let w = Worker::spawn(spec()).unwrap();
    let server = int(&process(&w), "ppid");
    assert_ne!(server, host_pid());
    // SAFETY: killing the server this test's worker came from.
    unsafe { libc::kill(i32::try_from(server).unwrap(), libc::SIGKILL) };
    let death = w
        .wait_exit_blocking(Duration::from_secs(10))
        .expect("the worker dies with its server");
    assert_eq!(death.exit, None, "its status died with the server: {death}");
    let pid = i32::try_from(w.pid()).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || !alive(pid)).is_some(),
        "worker {pid} outlived its server"
    );
    let again = Worker::spawn(spec()).unwrap();
    let second = int(&process(&again), "ppid");
    assert_ne!(second, server, "a new server");
    assert_ne!(second, host_pid(), "forked, not executed");
    again.stop_blocking();
}

/// An interpreter whose cjm-worker has no forkserver (as an older release).
fn interpreter_without_forkserver(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("python");
    fs_err::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$2\" = cjm_worker._forkserver ]; then\n  echo \"No module named cjm_worker._forkserver\" >&2\n  exit 1\nfi\nexec {} \"$@\"\n",
            python().display()
        ),
    )
    .unwrap();
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn without_a_forkserver_workers_start_with_exec() {
    let dir = std::env::temp_dir().join(format!("cjm-no-fork-{}", std::process::id()));
    fs_err::create_dir_all(&dir).unwrap();
    let mut spec = forked("Echo");
    spec.python = interpreter_without_forkserver(&dir);
    for _ in 0..2 {
        let w = Worker::spawn(spec.clone()).unwrap();
        assert_eq!(
            int(&process(&w), "ppid"),
            host_pid(),
            "executed by the host"
        );
        w.stop_blocking();
    }
    let _ = fs_err::remove_dir_all(&dir);
}

/// An interpreter whose forkserver greets as one from before `cjm-fork/1` did
/// (`ready PID VERSION`, no protocol): it writes `greeting` as it is about to
/// greet the host (which may kill it as soon as it has), and `requests` if the
/// host ever sends it a request.
fn interpreter_with_an_unversioned_forkserver(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let server = dir.join("old_forkserver.py");
    fs_err::write(
        &server,
        format!(
            "import os, socket, sys\n\
             ctl = socket.socket(fileno=int(sys.argv[1]))\n\
             open({greeting:?}, 'w').close()\n\
             ctl.send(f'ready {{os.getpid()}} 3.0.0'.encode())\n\
             if ctl.recvmsg(65536, 1024)[0]:\n    \
             open({requests:?}, 'w').close()\n",
            greeting = dir.join("greeting").display().to_string(),
            requests = dir.join("requests").display().to_string(),
        ),
    )
    .unwrap();
    let path = dir.join("python");
    fs_err::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$2\" = cjm_worker._forkserver ]; then\n  shift 2\n  exec {python} {server} \"$@\"\nfi\nexec {python} \"$@\"\n",
            python = python().display(),
            server = server.display(),
        ),
    )
    .unwrap();
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_forkserver_of_another_protocol_gets_no_request_and_workers_start_with_exec() {
    let dir = cjm_testkit::Scratch::new("proxy-old-forkserver");
    let mut spec = forked("Echo");
    spec.python = interpreter_with_an_unversioned_forkserver(dir.path());
    let w = Worker::spawn(spec).unwrap();
    assert_eq!(
        int(&process(&w), "ppid"),
        host_pid(),
        "executed by the host"
    );
    w.stop_blocking();
    assert!(
        dir.join("greeting").exists(),
        "the old server ran and greeted the host"
    );
    assert!(
        !dir.join("requests").exists(),
        "the host refused the server at its greeting, before any request"
    );
}

#[test]
fn a_plugin_that_fails_to_load_in_a_forked_worker_is_a_load_error() {
    let mut spec = forked("Echo");
    spec.module = "no_such_module_anywhere".into();
    let err = Worker::spawn(spec).unwrap_err();
    assert!(matches!(err, WorkerError::Load { .. }), "{err:?}");
    assert!(err.to_string().contains("no_such_module_anywhere"), "{err}");
}

/// Whether `needle` occurs anywhere in the readable memory of `pid` (a
/// descendant of this process, which may read its memory).
fn memory_contains(pid: i64, needle: &[u8]) -> bool {
    use std::os::unix::fs::FileExt;
    let maps = fs_err::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mem = fs_err::File::open(format!("/proc/{pid}/mem")).expect("mem");
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let mut buf = vec![0u8; usize::try_from(end - start).expect("size")];
        if mem.file().read_exact_at(&mut buf, start).is_err() {
            continue;
        }
        if buf.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

#[test]
fn a_secret_never_enters_the_forkserver_whose_memory_later_workers_inherit() {
    // Built at run time so the needle is in no binary's read-only data.
    let secret = format!("s3cr3t-{}-{}", std::process::id(), "forkserver-isolation");
    let spec = forked("Echo")
        .env("PYTHONCJMTESTSERVER", "secrets")
        .env("MY_API_KEY", &secret);
    let w = Worker::spawn(spec).unwrap();
    let env = w
        .execute_blocking(vec![], kw(&[("action", s("env"))]))
        .unwrap();
    assert_eq!(
        env.get("MY_API_KEY").and_then(Value::as_str),
        Some(secret.as_str()),
        "the worker has its secret"
    );
    let server = int(&process(&w), "ppid");
    assert!(
        memory_contains(server, b"cjm_worker._forkserver"),
        "the scan reads the server's memory"
    );
    assert!(
        memory_contains(int(&process(&w), "pid"), secret.as_bytes()),
        "the scan finds the secret where it is"
    );
    assert!(
        !memory_contains(server, secret.as_bytes()),
        "the secret reached the forkserver, so every later worker would inherit it"
    );
    w.stop_blocking();
}
