use cjm_proto::Value;

use crate::support::{kw, s, spec};

/// Every variable a worker may have, written out here rather than taken from
/// `cjm_core::INHERITED_ENV`, so that an allow-list grown too broad fails this
/// test: the host's variables a worker inherits (when the host has them), what
/// cjm sets, what the test's spec declares, and `LC_CTYPE`, which the
/// interpreter sets itself.
const WORKER_MAY_HAVE: &[&str] = &[
    // Inherited from the host.
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
    // Set by cjm.
    "PYTHONUNBUFFERED",
    "PYTHONPATH",
    "CJM_DATA_DIR",
    "CJM_MODELS_DIR",
    // Declared by the spec below.
    "PLUGIN_SETTING",
];

/// Host variables no worker may see unless a plugin declares them: credentials
/// and the host's own tooling.
const NEVER_INHERITED: &[&str] = &[
    "CJM_TEST_CLOUD_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "GITHUB_TOKEN",
    "SSH_AUTH_SOCK",
    "VIRTUAL_ENV",
    "CARGO_HOME",
];

#[test]
fn the_worker_sees_only_allowed_and_declared_variables() {
    for name in NEVER_INHERITED {
        // SAFETY: nextest runs each test in its own process; nothing else reads
        // the environment concurrently here.
        unsafe { std::env::set_var(name, "hunter2") };
    }
    // One the allow-list must pass on, with a value of the test's own.
    // SAFETY: as above.
    unsafe { std::env::set_var("TZ", "Etc/UTC") };
    let mut sp = spec("Echo").env("PLUGIN_SETTING", "on");
    sp.data_dir = Some("/tmp/cjm-data".into());
    sp.models_dir = Some("/tmp/cjm-models".into());
    let w = cjm_proxy::Worker::spawn(sp).unwrap();
    let env = w
        .execute_blocking(vec![], kw(&[("action", s("env"))]))
        .unwrap();
    let get = |k: &str| env.get(k).and_then(Value::as_str).map(str::to_owned);
    for name in NEVER_INHERITED {
        assert_eq!(get(name), None, "the host's {name} must not reach a worker");
    }
    assert_eq!(
        get("TZ").as_deref(),
        Some("Etc/UTC"),
        "inherited from the host"
    );
    assert_eq!(get("PLUGIN_SETTING").as_deref(), Some("on"));
    assert_eq!(get("CJM_DATA_DIR").as_deref(), Some("/tmp/cjm-data"));
    assert_eq!(get("CJM_MODELS_DIR").as_deref(), Some("/tmp/cjm-models"));
    assert!(get("PATH").is_some());
    let Value::Map(pairs) = &env else { panic!() };
    let extra: Vec<&str> = pairs
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !WORKER_MAY_HAVE.contains(k))
        .collect();
    assert!(
        extra.is_empty(),
        "unexpected variables in the worker: {extra:?}"
    );
}

/// Socket inodes a process holds open.
fn socket_inodes(pid: u32) -> Vec<String> {
    fs_err::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| fs_err::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn the_worker_has_no_listening_socket_and_no_network_socket() {
    let w = crate::support::spawn("Echo");
    let pid = w.pid();
    let inodes = socket_inodes(pid);
    assert_eq!(inodes.len(), 1, "only the private channel: {inodes:?}");
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let text = fs_err::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for inode in &inodes {
            assert!(
                !text.split_whitespace().any(|f| f == inode),
                "the worker's socket {inode} is an IP socket ({table})"
            );
        }
    }
    let unix = fs_err::read_to_string(format!("/proc/{pid}/net/unix")).unwrap();
    for line in unix.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 7 && inodes.iter().any(|i| i == f[6]) {
            let flags = u32::from_str_radix(f[3], 16).unwrap();
            assert_eq!(
                flags & 0x0001_0000,
                0,
                "the channel must not be a listening socket: {line}"
            );
        }
    }
}

#[test]
fn a_plugin_written_for_the_reference_runs_unchanged() {
    let mut sp = spec("RefPlugin");
    sp.module = "reference_plugins".into();
    let w = cjm_proxy::Worker::spawn(sp).unwrap();
    assert_eq!(w.info().get("name"), Some(&s("ref-plugin")));
    assert_eq!(w.info().get("version"), Some(&s("2.0.0")));
    let mut events = w.events();
    w.call_blocking(
        "initialize",
        vec![Value::map([("k", Value::Int(1))])],
        vec![],
        cjm_proxy::CallOptions::default(),
    )
    .unwrap();
    let out = w.execute_blocking(vec![s("x")], vec![]).unwrap();
    assert_eq!(out.get("echo"), Some(&Value::List(vec![s("x")])));
    assert_eq!(
        out.get("cfg").and_then(|c| c.get("k")),
        Some(&Value::Int(1))
    );
    let mut saw_progress = false;
    while let Ok(e) = events.try_recv() {
        if let cjm_proxy::Event::Progress { progress, .. } = e {
            saw_progress |= (progress - 0.5).abs() < 1e-9;
        }
    }
    assert!(
        saw_progress,
        "the reference's report_progress is pushed to the host"
    );
    // The reference's own cancel flag and check_cancel work through our cancel.
    let call = w
        .start("execute", vec![], kw(&[("action", s("cancel_loop"))]))
        .unwrap();
    crate::support::wait_running(&w, call.id());
    let phase = w
        .cancel_blocking(
            call.id(),
            cjm_proxy::CancelPolicy {
                // Only the plugin's co-operation ends it: no grace that a busy
                // machine could pass.
                grace: std::time::Duration::from_mins(1),
                restart: false,
            },
        )
        .unwrap();
    assert_eq!(phase, Some(cjm_core::CancelPhase::Cooperative));
}

/// Stopping a worker takes a grandchild that called `setsid`, where the worker has
/// a cgroup of its own; without one (cgroup v1 only, or an undelegated v2 tree) the
/// grandchild outlives it, as documented.
#[test]
fn stopping_a_worker_takes_a_setsid_grandchild_where_workers_get_cgroups() {
    for method in [
        cjm_proxy::StartMethod::Spawn,
        cjm_proxy::StartMethod::Forkserver,
    ] {
        let mut spec = crate::support::spec("Spawner");
        spec.start_method = method;
        let w = cjm_proxy::Worker::spawn(spec).unwrap();
        let pid = w
            .execute_blocking(
                vec![],
                crate::support::kw(&[("setsid", cjm_proto::Value::Bool(true))]),
            )
            .unwrap()
            .as_i64()
            .unwrap() as i32;
        assert!(crate::support::alive(pid));
        w.stop_blocking();
        let gone = crate::support::eventually(std::time::Duration::from_secs(5), || {
            !crate::support::alive(pid)
        });
        match cjm_proxy::cgroup_isolation() {
            Ok(dir) => assert!(
                gone.is_some(),
                "{method:?}: the setsid grandchild {pid} survived its worker's cgroup {}",
                dir.display()
            ),
            Err(why) => {
                // The documented limit: nothing holds a process that left the group.
                assert!(gone.is_none(), "{method:?}: {why}");
                // SAFETY: killing the fixture's own grandchild.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// A spec's memory limit becomes its worker cgroup's `memory.max`, and the
/// cgroup counts the worker's memory, where the machine delegates the memory
/// controller to cjm; elsewhere the worker runs without either and the reason
/// is given.
#[test]
fn a_memory_limit_is_the_worker_cgroups_memory_max_where_the_controller_is_delegated() {
    let mut spec = crate::support::spec("Echo");
    spec.memory_limit_bytes = Some(256 << 20);
    let w = cjm_proxy::Worker::spawn(spec).unwrap();
    w.execute_blocking(vec![], vec![]).unwrap();
    match cjm_proxy::memory_accounting() {
        Ok(dir) => {
            let m = w.cgroup_memory().unwrap_or_else(|| {
                panic!("memory is accounted under {} but not read", dir.display())
            });
            assert_eq!(m.max_bytes, Some(256 << 20), "{m:?}");
            assert!(
                m.current_bytes > 1 << 20,
                "an interpreter holds more: {m:?}"
            );
            assert_eq!(m.oom_kills, 0);
        }
        Err(why) => {
            assert_eq!(w.cgroup_memory(), None, "{why}");
            assert!(!why.is_empty());
        }
    }
    w.stop_blocking();
}
