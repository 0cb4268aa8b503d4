//! A real out-of-memory: a worker that allocates past the memory cgroup the test
//! puts it in is killed by the kernel, and the manager restarts it and tries the
//! call again.

use cjm_manager::{LoadSpec, Manager, ManagerEvent};
use cjm_proto::Value;
use serde_json::json;

use crate::support::{Project, wait_for};

/// A cgroup v1 memory cgroup below this process's own, removed on drop.
struct MemoryCgroup(std::path::PathBuf);

impl MemoryCgroup {
    /// One limited to `limit` bytes, or why there cannot be one here.
    fn create(name: &str, limit: u64) -> Result<Self, String> {
        let own = fs_err::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let path = own
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "memory")
                    .then(|| path.to_owned())
            })
            .ok_or("this machine has no cgroup v1 memory controller")?;
        let dir = std::path::Path::new("/sys/fs/cgroup/memory")
            .join(path.trim_start_matches('/'))
            .join(format!("{name}-{}", std::process::id()));
        fs_err::create_dir(&dir)
            .map_err(|e| format!("cannot create a memory cgroup (needs root): {e}"))?;
        let group = Self(dir);
        fs_err::write(group.0.join("memory.limit_in_bytes"), limit.to_string())
            .map_err(|e| e.to_string())?;
        let memsw = group.0.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            // No swapping out of the limit: the kernel must kill.
            fs_err::write(memsw, limit.to_string()).map_err(|e| e.to_string())?;
        }
        Ok(group)
    }

    fn add(&self, pid: u32) {
        fs_err::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    fn oom_kills(&self) -> u64 {
        fs_err::read_to_string(self.0.join("memory.oom_control"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = fs_err::remove_dir(&self.0);
    }
}

#[test]
fn a_worker_the_kernel_kills_for_memory_is_restarted_and_its_call_tried_again() {
    let cgroup = match MemoryCgroup::create("cjm-test-oom", 128 << 20) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let p = Project::new("kernel-oom");
    p.manifest_of("hungry", "demo", "HungryPlugin", None, "Hungry");
    let m = Manager::new(p.config(), p.options());
    let id = m.load(&LoadSpec::new("hungry")).unwrap();
    let first = m.worker(&id).unwrap().pid();
    cgroup.add(first);
    let mut events = m.subscribe();
    let out = m
        .execute(&id, vec![], vec![("mb".into(), Value::Int(512))])
        .unwrap()
        .to_json();
    assert_ne!(out["pid"], json!(first), "the retry ran in a fresh worker");
    assert!(
        cgroup.oom_kills() >= 1,
        "the kernel killed the first worker"
    );
    let seen = wait_for(&mut events, |e| {
        matches!(e, ManagerEvent::OutOfMemory { .. })
    });
    let Some(ManagerEvent::OutOfMemory { attempt, error, .. }) = seen.last() else {
        unreachable!()
    };
    assert_eq!(*attempt, 1);
    assert!(error.contains("SIGKILL"), "{error}");
}

/// A hard memory limit, from the load or from the manifest's
/// `resources.max_system_ram_mb`, is the worker cgroup's `memory.max` where the
/// machine delegates the memory controller; elsewhere the worker runs without
/// it (and is measured through procfs).
#[test]
fn a_hard_memory_limit_reaches_the_workers_cgroup_where_the_controller_is_delegated() {
    let p = Project::new("hard-limit");
    p.manifest("limited", "demo", "CounterPlugin");
    p.declare("limited", json!({"max_system_ram_mb": 300}));
    let m = p.manager();
    let declared = m.load(&LoadSpec::new("limited")).unwrap();
    let given = m
        .load(
            &LoadSpec::new("counter")
                .instance("given")
                .memory_limit(200 << 20),
        )
        .unwrap();
    for (id, limit) in [(&declared, 300u64 << 20), (&given, 200 << 20)] {
        m.execute(id, vec![], vec![]).unwrap();
        let worker = m.worker(id).unwrap();
        assert_eq!(worker.spec().memory_limit_bytes, Some(limit), "{id}");
        match cjm_proxy::memory_accounting() {
            Ok(_) => {
                let cg = worker.cgroup_memory().unwrap();
                assert_eq!(cg.max_bytes, Some(limit), "{id}: {cg:?}");
                let held = m
                    .refresh_resources()
                    .instances
                    .into_iter()
                    .find(|i| &i.id == id)
                    .unwrap()
                    .held;
                assert!(held.ram_bytes > 0, "{id}: measured by its cgroup");
            }
            Err(why) => assert!(worker.cgroup_memory().is_none(), "{why}"),
        }
    }
}
