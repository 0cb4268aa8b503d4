//! End-to-end benchmarks of cjm workers, each beside a floor measured in the same
//! run: a raw socketpair ping-pong with a minimal Python loop, an in-process memcpy,
//! a bare interpreter's start-up and RSS.
//!
//! Run with `CJM_PYTHON=… cargo run --release -p cjm-bench`. Prints a table to
//! stderr and writes `bench/results.json`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use cjm_proto::{Buffer, Value};
use cjm_proxy::{CallOptions, Worker, WorkerSpec};
use serde_json::{Map, Value as Json, json};

mod install;
mod manager;

const LATENCY_WARMUP: usize = 2_000;
const LATENCY_SAMPLES: usize = 20_000;
const PIPELINED_CALLS: usize = 20_000;
const PIPELINE_DEPTH: usize = 256;
const BULK_LEN: usize = 512 << 20;
const BULK_ROUNDS: usize = 3;
const SPAWN_RUNS: usize = 10;

/// The minimal Python side of the floor: echo every packet back.
const FLOOR_SCRIPT: &str = "import socket,sys
s=socket.socket(fileno=int(sys.argv[1]))
r=s.recv
w=s.send
while True:
    b=r(64)
    if not b: break
    w(b)
";

struct Ctx {
    python: PathBuf,
    fixtures: PathBuf,
    plugins: PathBuf,
    root: PathBuf,
}

impl Ctx {
    fn spec(&self, module: &str, class: &str) -> WorkerSpec {
        let dir = if module == "fixture_plugins" {
            &self.fixtures
        } else {
            &self.plugins
        };
        WorkerSpec::new(class.to_lowercase(), &self.python, module, class).python_path(dir)
    }
}

/// One row of the table and one set of keys in the JSON.
struct Row {
    key: &'static str,
    measured: f64,
    unit: &'static str,
    floor: Option<f64>,
    ratio: Option<f64>,
    /// The figure compared with the target (the ratio when there is one).
    judged: f64,
    target: f64,
    /// `true` when the judged figure must be at most the target.
    at_most: bool,
}

impl Row {
    fn met(&self) -> bool {
        if self.at_most {
            self.judged <= self.target
        } else {
            self.judged >= self.target
        }
    }
}

#[expect(clippy::too_many_lines, reason = "one linear script of measurements")]
fn main() -> Result<()> {
    let python = std::env::var_os("CJM_PYTHON")
        .map(PathBuf::from)
        .context("CJM_PYTHON is not set: point it at the interpreter of a venv with cjm-worker installed (e.g. target/cjm/venv/bin/python)")?;
    if !python.exists() {
        bail!("CJM_PYTHON={} does not exist", python.display());
    }
    let bench_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = bench_dir
        .parent()
        .context("bench has no parent directory")?
        .to_path_buf();
    let ctx = Ctx {
        python,
        fixtures: root.join("crates/cjm-proxy/tests/fixtures"),
        plugins: bench_dir.join("plugins"),
        root,
    };
    let started = Instant::now();
    let mut out = Map::new();
    let mut rows = Vec::new();

    say("floor: raw socketpair ping-pong with a minimal Python echo loop")?;
    let floor = floor_ping_pong(&ctx)?;
    let floor_p50 = us(floor);
    out.insert("floor_p50_us".into(), json!(floor_p50));

    let echo = Worker::spawn(ctx.spec("fixture_plugins", "Echo")).context("spawning Echo")?;

    say("sync: call_blocking round trips")?;
    let sync = sync_latency(&echo)?;
    let sync_p50 = us(sync);
    out.insert("sync_p50_us".into(), json!(sync_p50));
    rows.push(Row {
        key: "sync_p50_ratio",
        measured: sync_p50,
        unit: "us",
        floor: Some(floor_p50),
        ratio: Some(sync_p50 / floor_p50),
        judged: sync_p50 / floor_p50,
        target: 2.0,
        at_most: true,
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;

    say("async: call().await round trips, one at a time")?;
    let asyn = rt.block_on(async_latency(&echo))?;
    let async_p50 = us(asyn);
    out.insert("async_p50_us".into(), json!(async_p50));
    rows.push(Row {
        key: "async_p50_ratio",
        measured: async_p50,
        unit: "us",
        floor: Some(floor_p50),
        ratio: Some(async_p50 / floor_p50),
        judged: async_p50 / floor_p50,
        target: 3.0,
        at_most: true,
    });

    say("pipelined: many async calls in flight")?;
    let per_s = rt.block_on(pipelined(&echo))?;
    rows.push(Row {
        key: "pipelined_calls_per_s",
        measured: per_s,
        unit: "calls/s",
        floor: None,
        ratio: None,
        judged: per_s,
        target: 100_000.0,
        at_most: false,
    });

    say("bulk: 512 MiB host -> worker -> host vs memcpy")?;
    let bulk = bulk(&echo)?;
    out.insert("bulk_gbps".into(), json!(bulk.gbps));
    out.insert("memcpy_gbps".into(), json!(bulk.memcpy_gbps));
    out.insert("bulk_fill_ms".into(), json!(bulk.fill_ms));
    out.insert("bulk_call_ms".into(), json!(bulk.call_ms));
    out.insert("bulk_segment_reused".into(), json!(bulk.reused));
    rows.push(Row {
        key: "bulk_512mb_ratio",
        measured: bulk.gbps,
        unit: "GB/s",
        floor: Some(bulk.memcpy_gbps),
        ratio: Some(bulk.gbps / bulk.memcpy_gbps),
        judged: bulk.gbps / bulk.memcpy_gbps,
        target: 0.5,
        at_most: false,
    });

    say("shm output: 512 MiB result allocated by the plugin")?;
    let shm_ms = shm_output(&echo, "execute", &[("action", Value::Str("shm".into()))])?;
    rows.push(Row {
        key: "shm_output_512mb_ms",
        measured: shm_ms,
        unit: "ms",
        floor: None,
        ratio: None,
        judged: shm_ms,
        target: 5.0,
        at_most: true,
    });
    let prealloc =
        Worker::spawn(ctx.spec("bench_plugins", "Prealloc")).context("spawning Prealloc")?;
    let shm_pre_ms = shm_output(&prealloc, "execute", &[])?;
    prealloc.stop_blocking();
    rows.push(Row {
        key: "shm_output_512mb_alloc_excluded_ms",
        measured: shm_pre_ms,
        unit: "ms",
        floor: None,
        ratio: None,
        judged: shm_pre_ms,
        target: 5.0,
        at_most: true,
    });
    echo.stop_blocking();

    say("spawn: spawn -> first result vs `python -c pass`")?;
    let (spawn_ms, bare_start_ms) = spawn_cost(&ctx)?;
    out.insert("spawn_to_first_result_ms".into(), json!(spawn_ms));
    out.insert("python_c_pass_ms".into(), json!(bare_start_ms));
    rows.push(Row {
        key: "spawn_extra_ms",
        measured: spawn_ms,
        unit: "ms",
        floor: Some(bare_start_ms),
        ratio: None,
        judged: spawn_ms - bare_start_ms,
        target: 25.0,
        at_most: true,
    });

    say("idle RSS: worker after one call vs an idle bare interpreter")?;
    let (worker_mb, bare_mb) = idle_rss(&ctx)?;
    out.insert("idle_rss_worker_mb".into(), json!(worker_mb));
    out.insert("idle_rss_bare_python_mb".into(), json!(bare_mb));
    rows.push(Row {
        key: "idle_rss_extra_mb",
        measured: worker_mb,
        unit: "MiB",
        floor: Some(bare_mb),
        ratio: None,
        judged: worker_mb - bare_mb,
        target: 6.0,
        at_most: true,
    });

    say("host death: SIGKILL the host, time until its worker is gone")?;
    match host_death(&ctx) {
        Ok(Some(hd)) => {
            out.insert("host_death_worker_gone_ms".into(), json!(hd.worker_ms));
            out.insert(
                "host_death_grandchild_gone_ms".into(),
                hd.grandchild_ms.map_or(Json::Null, |m| json!(m)),
            );
            // The target covers the worker's whole process group: a grandchild that
            // survives (reported as 5000 ms, the give-up point) misses it.
            let all_ms = hd.grandchild_ms.map_or(5000.0, |g| g.max(hd.worker_ms));
            rows.push(Row {
                key: "host_death_cleanup_ms",
                measured: all_ms,
                unit: "ms",
                floor: None,
                ratio: None,
                judged: all_ms,
                target: 100.0,
                at_most: true,
            });
        }
        Ok(None) => say("  skipped: build it with `cargo build --release -p cjm-proxy --bins`")?,
        Err(e) => say(&format!("  failed: {e:#}"))?,
    }

    say("install: cjm-ctl install-all (uv, warm cache, empty data dir) vs venv + pip")?;
    match install::install(&ctx.root, &ctx.python) {
        Ok(i) => {
            out.insert("install_venv_pip_s".into(), json!(i.venv_pip));
            rows.push(Row {
                key: "install_warm_s",
                measured: i.warm,
                unit: "s",
                floor: None,
                ratio: None,
                judged: i.warm,
                target: 1.0,
                at_most: true,
            });
            rows.push(Row {
                key: "install_vs_venv_pip_ratio",
                measured: i.warm,
                unit: "s",
                floor: Some(i.venv_pip),
                ratio: Some(i.warm / i.venv_pip),
                judged: i.warm / i.venv_pip,
                target: 0.2,
                at_most: true,
            });
            rows.push(Row {
                key: "install_noop_s",
                measured: i.noop,
                unit: "s",
                floor: None,
                ratio: None,
                judged: i.noop,
                target: 0.3,
                at_most: true,
            });
        }
        Err(e) => say(&format!("  failed: {e:#}"))?,
    }

    say("manager: execute through the manager vs the bare worker; 10 loads at once vs 1")?;
    match manager::manager(&ctx.root, &ctx.python) {
        Ok(m) => {
            out.insert("manager_p50_us".into(), json!(m.manager_p50_us));
            out.insert("manager_bare_p50_us".into(), json!(m.bare_p50_us));
            out.insert("load_one_ms".into(), json!(m.load_one_ms));
            out.insert("load_10_ms".into(), json!(m.load_ten_ms));
            out.insert("load_2_ms".into(), json!(m.load_two_ms));
            out.insert("load_cpu_ms_per_instance".into(), json!(m.load_cpu_ms));
            // What the cores allow: ten loads' CPU spread over every core, ÷ one load.
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            let cpu_floor = m.load_cpu_ms * 10.0 / cores as f64 / m.load_one_ms;
            out.insert("load_10_cpu_floor_ratio".into(), json!(cpu_floor));
            out.insert("load_one_spawn_ms".into(), json!(m.spawn_one_ms));
            out.insert("load_10_spawn_ms".into(), json!(m.spawn_ten_ms));
            out.insert("forkserver_10_starts_ratio".into(), json!(m.fork_ten_ratio));
            out.insert("python_10_starts_ratio".into(), json!(m.python_ten_ratio));
            say(&format!(
                "  forked: one {:.1} ms, two {:.1} ms, ten {:.1} ms; {:.1} ms CPU each, so ten on {cores} cores need at least {:.2}× one; 10 bare forked workers ÷ 1: {:.2}",
                m.load_one_ms,
                m.load_two_ms,
                m.load_ten_ms,
                m.load_cpu_ms,
                cpu_floor,
                m.fork_ten_ratio
            ))?;
            say(&format!(
                "  executed: one {:.1} ms, ten {:.1} ms (ratio {:.2}); floor (10 bare interpreters ÷ 1) {:.2}",
                m.spawn_one_ms,
                m.spawn_ten_ms,
                m.spawn_ten_ms / m.spawn_one_ms,
                m.python_ten_ratio
            ))?;
            let overhead = m.manager_p50_us - m.bare_p50_us;
            rows.push(Row {
                key: "manager_call_overhead_us",
                measured: m.manager_p50_us,
                unit: "us",
                floor: Some(m.bare_p50_us),
                ratio: None,
                judged: overhead,
                target: 5.0,
                at_most: true,
            });
            rows.push(Row {
                key: "load_10_instances_ratio",
                measured: m.load_ten_ms,
                unit: "ms",
                floor: Some(m.load_one_ms),
                ratio: Some(m.load_ten_ms / m.load_one_ms),
                judged: m.load_ten_ms / m.load_one_ms,
                target: 3.0,
                at_most: true,
            });
        }
        Err(e) => say(&format!("  failed: {e:#}"))?,
    }

    let mut targets = Map::new();
    for r in &rows {
        // Ratio keys and plain keys alike: the key's own figure is the judged one.
        out.insert(r.key.into(), json!(r.judged));
        let cmp = if r.at_most { "<=" } else { ">=" };
        targets.insert(
            r.key.into(),
            json!({ "op": cmp, "value": r.target, "met": r.met() }),
        );
    }
    out.insert("targets".into(), Json::Object(targets));
    out.insert("machine".into(), machine());
    out.insert("date".into(), json!(utc_now()));
    out.insert(
        "total_seconds".into(),
        json!(started.elapsed().as_secs_f64()),
    );

    print_table(&rows)?;
    let path = ctx.root.join("bench/results.json");
    let text = serde_json::to_string_pretty(&Json::Object(out))?;
    fs_err::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    say(&format!(
        "wrote {} in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    ))?;
    Ok(())
}

fn say(msg: &str) -> Result<()> {
    writeln!(std::io::stderr(), "{msg}")?;
    Ok(())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    v[v.len() / 2]
}

/// p50 of an 8-byte ping-pong over a `SOCK_SEQPACKET` socketpair with a Python
/// loop doing `recv`/`send` (the least any Rust⇄Python round trip can cost here).
fn floor_ping_pong(ctx: &Ctx) -> Result<Duration> {
    use rustix::io::{FdFlags, fcntl_setfd};
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("socketpair")?;
    // Only the child's end is inherited (nothing else spawns while this runs).
    fcntl_setfd(&theirs, FdFlags::empty()).context("clearing FD_CLOEXEC")?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
    let mut child = Command::new(&ctx.python)
        .args(["-c", FLOOR_SCRIPT, &fd.to_string()])
        .stdin(Stdio::null())
        .spawn()
        .context("spawning the floor's Python loop")?;
    drop(theirs);
    let mut sock = UnixStream::from(ours);
    let msg = [7u8; 8];
    let mut buf = [0u8; 64];
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_WARMUP + LATENCY_SAMPLES {
        let t = Instant::now();
        sock.write_all(&msg).context("floor: send")?;
        let n = sock.read(&mut buf).context("floor: recv")?;
        let dt = t.elapsed();
        if n != msg.len() {
            bail!("floor loop answered {n} bytes");
        }
        if i >= LATENCY_WARMUP {
            samples.push(dt);
        }
    }
    drop(sock);
    child.wait()?;
    Ok(median(samples))
}

fn one() -> Vec<Value> {
    vec![Value::Int(1)]
}

fn sync_latency(w: &Worker) -> Result<Duration> {
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_WARMUP + LATENCY_SAMPLES {
        let t = Instant::now();
        let v = w.call_blocking("execute", one(), vec![], CallOptions::default())?;
        let dt = t.elapsed();
        if v != Value::Int(1) {
            bail!("echo answered {v:?}");
        }
        if i >= LATENCY_WARMUP {
            samples.push(dt);
        }
    }
    Ok(median(samples))
}

async fn async_latency(w: &Worker) -> Result<Duration> {
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_WARMUP + LATENCY_SAMPLES {
        let t = Instant::now();
        let v = w
            .call("execute", one(), vec![], CallOptions::default())
            .await?;
        let dt = t.elapsed();
        if v != Value::Int(1) {
            bail!("echo answered {v:?}");
        }
        if i >= LATENCY_WARMUP {
            samples.push(dt);
        }
    }
    Ok(median(samples))
}

/// Calls/s with up to `PIPELINE_DEPTH` calls in flight, started with `start()` and
/// awaited oldest first.
async fn pipelined(w: &Worker) -> Result<f64> {
    let run = |n: usize| async move {
        let mut inflight = VecDeque::with_capacity(PIPELINE_DEPTH);
        let t = Instant::now();
        for i in 0..n {
            if inflight.len() == PIPELINE_DEPTH {
                let p: cjm_proxy::PendingCall =
                    inflight.pop_front().context("pipeline is empty")?;
                p.outcome().await?;
            }
            inflight.push_back(w.start("execute", vec![Value::Int(i as i64)], vec![])?);
        }
        while let Some(p) = inflight.pop_front() {
            p.outcome().await?;
        }
        anyhow::Ok(t.elapsed())
    };
    run(2_000).await?;
    let dt = run(PIPELINED_CALLS).await?;
    Ok(PIPELINED_CALLS as f64 / dt.as_secs_f64())
}

struct Bulk {
    gbps: f64,
    memcpy_gbps: f64,
    fill_ms: f64,
    call_ms: f64,
    reused: bool,
}

/// 512 MiB host → worker → host. Timed: copying the source into the (reused) shm
/// buffer plus the echo call that hands the same segment back as `Buffer::Shm`.
fn bulk(w: &Worker) -> Result<Bulk> {
    let gb = BULK_LEN as f64 / 1e9;
    let src: Vec<u8> = (0..BULK_LEN).map(|i| (i >> 12) as u8).collect();
    // memcpy floor between two pre-faulted buffers.
    let mut dst = vec![1u8; BULK_LEN];
    dst.copy_from_slice(&src);
    let mut copies = Vec::new();
    for _ in 0..BULK_ROUNDS {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        copies.push(t.elapsed());
        std::hint::black_box(&dst);
    }
    drop(dst);
    let memcpy_gbps = gb / median(copies).as_secs_f64();

    let mut fills = Vec::new();
    let mut calls = Vec::new();
    let mut totals = Vec::new();
    let mut seg_ids = Vec::new();
    for round in 0..=BULK_ROUNDS {
        // Let the worker's release of the previous round reach the pool.
        std::thread::sleep(Duration::from_millis(50));
        let mut buf = w.alloc(BULK_LEN)?;
        seg_ids.push(buf.segment().id());
        let t = Instant::now();
        buf.as_mut_slice().copy_from_slice(&src);
        let filled = t.elapsed();
        let sent = Buffer::Shm(buf.freeze());
        let back = w.execute_blocking(vec![Value::Bytes(sent)], vec![])?;
        let total = t.elapsed();
        let Value::Bytes(back) = back else {
            bail!("echo answered a non-bytes value");
        };
        if !back.is_shared() || back.len() != BULK_LEN || back[BULK_LEN - 1] != src[BULK_LEN - 1] {
            bail!("the 512 MiB echo came back wrong");
        }
        drop(back);
        if round > 0 {
            fills.push(filled);
            calls.push(total.saturating_sub(filled));
            totals.push(total);
        }
    }
    let reused = seg_ids.windows(2).skip(1).all(|p| p[0] == p[1]);
    Ok(Bulk {
        gbps: gb / median(totals).as_secs_f64(),
        memcpy_gbps,
        fill_ms: ms(median(fills)),
        call_ms: ms(median(calls)),
        reused,
    })
}

/// Median of 3 (after a warm-up) of: call start → the host holds a 512 MiB
/// shared-memory result.
fn shm_output(w: &Worker, method: &str, extra: &[(&str, Value)]) -> Result<f64> {
    let mut kwargs: Vec<(String, Value)> = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    kwargs.push(("size".into(), Value::Int(BULK_LEN as i64)));
    let mut samples = Vec::new();
    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        let v = w.call_blocking(method, vec![], kwargs.clone(), CallOptions::default())?;
        let dt = t.elapsed();
        let Value::Bytes(b) = v else {
            bail!("shm call answered {v:?}");
        };
        if !b.is_shared() || b.len() != BULK_LEN || &b[..4] != b"cjm!" {
            bail!("shm result is not the 512 MiB shared buffer");
        }
        drop(b);
        if round > 0 {
            samples.push(dt);
        }
    }
    Ok(ms(median(samples)))
}

fn spawn_cost(ctx: &Ctx) -> Result<(f64, f64)> {
    let mut spawns = Vec::new();
    for _ in 0..SPAWN_RUNS {
        let t = Instant::now();
        let w = Worker::spawn(ctx.spec("bench_plugins", "Trivial"))?;
        let v = w.call_blocking("execute", one(), vec![], CallOptions::default())?;
        let dt = t.elapsed();
        if v != Value::Int(1) {
            bail!("trivial answered {v:?}");
        }
        w.stop_blocking();
        spawns.push(dt);
    }
    let mut bare = Vec::new();
    for _ in 0..SPAWN_RUNS {
        let t = Instant::now();
        let st = Command::new(&ctx.python)
            .args(["-c", "pass"])
            .stdin(Stdio::null())
            .status()?;
        bare.push(t.elapsed());
        if !st.success() {
            bail!("python -c pass failed: {st}");
        }
    }
    Ok((ms(median(spawns)), ms(median(bare))))
}

fn vm_rss_mb(pid: u32) -> Result<f64> {
    let status = fs_err::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// Worker RSS after one call (median of 3 workers) vs an idle bare interpreter.
fn idle_rss(ctx: &Ctx) -> Result<(f64, f64)> {
    let mut workers = Vec::new();
    for _ in 0..3 {
        let w = Worker::spawn(ctx.spec("bench_plugins", "Trivial"))?;
        w.call_blocking("execute", one(), vec![], CallOptions::default())?;
        std::thread::sleep(Duration::from_millis(200));
        workers.push(w.stats()?.rss_bytes as f64 / (1024.0 * 1024.0));
        w.stop_blocking();
    }
    let mut bare = Vec::new();
    for _ in 0..3 {
        let mut child = Command::new(&ctx.python)
            .args(["-c", "import sys; sys.stdin.read()"])
            .stdin(Stdio::piped())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(300));
        let rss = vm_rss_mb(child.id());
        drop(child.stdin.take());
        child.wait()?;
        bare.push(rss?);
    }
    Ok((median_f(workers), median_f(bare)))
}

/// `None` when the process is gone or a zombie.
fn proc_state(pid: u32) -> Option<char> {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    (state != 'Z').then_some(state)
}

/// What killing the fixture host with SIGKILL left behind, median of 3.
struct HostDeath {
    /// Kill → the worker is gone (or a zombie).
    worker_ms: f64,
    /// Kill → the plugin's grandchild is gone; `None` if one outlived the host by 5 s.
    grandchild_ms: Option<f64>,
}

/// SIGKILL the fixture host (its `Spawner` plugin started a grandchild), time until
/// its worker and the grandchild are gone. Survivors are killed by pid afterwards.
fn host_death(ctx: &Ctx) -> Result<Option<HostDeath>> {
    let host = ctx.root.join("target/release/cjm-proxy-fixture-host");
    if !host.exists() {
        // `cargo xtask bench` builds it; a bare `cargo run -p cjm-bench` may not have.
        let mut err = std::io::stderr();
        writeln!(
            err,
            "host death: skipped, {} is missing (cargo build --release -p cjm-proxy --bins)",
            host.display()
        )?;
        return Ok(None);
    }
    let mut workers = Vec::new();
    let mut grandchildren = Vec::new();
    let mut survivors = 0;
    for _ in 0..3 {
        let mut child = Command::new(&host)
            .arg(&ctx.python)
            .arg(&ctx.fixtures)
            .arg("idle")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let mut pids = line.split_whitespace().map(str::parse::<u32>);
        let worker: u32 = pids.next().context("no worker pid")??;
        let grandchild: u32 = pids.next().context("no grandchild pid")??;
        let t = Instant::now();
        child.kill()?;
        let deadline = t + Duration::from_secs(5);
        let (mut worker_gone, mut grandchild_gone) = (None, None);
        while (worker_gone.is_none() || grandchild_gone.is_none()) && Instant::now() < deadline {
            if worker_gone.is_none() && proc_state(worker).is_none() {
                worker_gone = Some(t.elapsed());
            }
            if grandchild_gone.is_none() && proc_state(grandchild).is_none() {
                grandchild_gone = Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        child.wait()?;
        for (pid, gone) in [(worker, worker_gone), (grandchild, grandchild_gone)] {
            if gone.is_none() {
                survivors += 1;
                say(&format!("  pid {pid} outlived the host by 5 s; killing it"))?;
                if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
        }
        workers.push(worker_gone.context("the worker outlived its host by 5 s")?);
        grandchildren.push(grandchild_gone);
    }
    let grandchild_ms = if grandchildren.iter().all(Option::is_some) {
        Some(ms(median(grandchildren.into_iter().flatten().collect())))
    } else {
        None
    };
    if survivors > 0 {
        say(&format!("  {survivors} process(es) survived their host"))?;
    }
    Ok(Some(HostDeath {
        worker_ms: ms(median(workers)),
        grandchild_ms,
    }))
}

fn machine() -> Json {
    let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = fs_err::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    json!({ "nproc": nproc, "model_name": model })
}

/// ISO 8601 UTC, from the civil-from-days algorithm (no date crate needed).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn print_table(rows: &[Row]) -> Result<()> {
    let mut e = std::io::stderr().lock();
    writeln!(e)?;
    writeln!(
        e,
        "{:<36} {:>16} {:>14} {:>8} {:>12} {:>5}",
        "key", "measured", "floor", "ratio", "target", "met?"
    )?;
    writeln!(e, "{}", "-".repeat(96))?;
    for r in rows {
        let measured = format!("{} {}", fmt_num(r.measured), r.unit);
        let floor = r
            .floor
            .map_or_else(|| "-".into(), |f| format!("{} {}", fmt_num(f), r.unit));
        let ratio = r.ratio.map_or_else(|| "-".into(), fmt_num);
        let target = format!(
            "{} {}",
            if r.at_most { "<=" } else { ">=" },
            fmt_num(r.target)
        );
        let judged = if r.ratio.is_none() && r.floor.is_some() {
            format!(" (extra {})", fmt_num(r.judged))
        } else {
            String::new()
        };
        writeln!(
            e,
            "{:<36} {:>16} {:>14} {:>8} {:>12} {:>5}{judged}",
            r.key,
            measured,
            floor,
            ratio,
            target,
            if r.met() { "yes" } else { "NO" }
        )?;
    }
    writeln!(e)?;
    Ok(())
}
