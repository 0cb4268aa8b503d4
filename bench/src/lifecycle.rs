//! A worker's life: what starting one costs over a bare interpreter, what it holds
//! when idle, and how fast it is gone when its host dies (idle, and busy in C code
//! or in Python).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cjm_proto::Value;
use cjm_proxy::{CallOptions, Worker};

use crate::report::{Reading, Report, say};
use crate::{Ctx, median, median_f, ms};

const SPAWN_RUNS: usize = 10;
const HOST_DEATH_RUNS: usize = 3;
/// How long a process may outlive its host before it counts as a survivor.
const GIVE_UP: Duration = Duration::from_secs(5);

/// Spawn → first result, against `python -c pass`.
pub(crate) fn spawn_cost(r: &mut Report, ctx: &Ctx) -> Result<()> {
    let mut spawns = Vec::new();
    for _ in 0..SPAWN_RUNS {
        let t = Instant::now();
        let w = Worker::spawn(ctx.spec("bench_plugins", "Trivial"))?;
        let v = w.call_blocking(
            "execute",
            vec![Value::Int(1)],
            vec![],
            CallOptions::default(),
        )?;
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
    let (spawn_ms, bare_ms) = (ms(median(spawns)), ms(median(bare)));
    r.figure("spawn_to_first_result_ms", spawn_ms);
    r.figure("python_c_pass_ms", bare_ms);
    r.judge("spawn_extra_ms", Reading::extra(spawn_ms, bare_ms));
    Ok(())
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

/// Worker RSS after one call (median of 3 workers) against a bare interpreter that
/// has started and waits on stdin (it says so on stdout, so nothing sleeps to guess).
pub(crate) fn idle_rss(r: &mut Report, ctx: &Ctx) -> Result<()> {
    let mut workers = Vec::new();
    for _ in 0..3 {
        let w = Worker::spawn(ctx.spec("bench_plugins", "Trivial"))?;
        w.call_blocking(
            "execute",
            vec![Value::Int(1)],
            vec![],
            CallOptions::default(),
        )?;
        workers.push(w.stats()?.rss_bytes as f64 / (1024.0 * 1024.0));
        w.stop_blocking();
    }
    let mut bare = Vec::new();
    for _ in 0..3 {
        let mut child = Command::new(&ctx.python)
            .args(["-c", "import sys; print(flush=True); sys.stdin.read()"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let rss = vm_rss_mb(child.id());
        drop(child.stdin.take());
        child.wait()?;
        bare.push(rss?);
    }
    let (worker_mb, bare_mb) = (median_f(workers), median_f(bare));
    r.figure("idle_rss_worker_mb", worker_mb);
    r.figure("idle_rss_bare_python_mb", bare_mb);
    r.judge("idle_rss_extra_mb", Reading::extra(worker_mb, bare_mb));
    Ok(())
}

/// `None` when the process is gone or a zombie.
fn proc_state(pid: u32) -> Option<char> {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    (state != 'Z').then_some(state)
}

/// Kill → the worker and its plugin's grandchild are both gone, ms, median of
/// `HOST_DEATH_RUNS`; a process that outlives its host by `GIVE_UP` is an error.
fn host_death_ms(ctx: &Ctx, mode: &str) -> Result<(f64, f64)> {
    let host = ctx.root.join("target/release/cjm-proxy-fixture-host");
    if !host.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p cjm-proxy --bins` \
             (`cargo xtask bench` does)",
            host.display()
        );
    }
    let (mut workers, mut everything) = (Vec::new(), Vec::new());
    for _ in 0..HOST_DEATH_RUNS {
        let mut child = Command::new(&host)
            .arg(&ctx.python)
            .arg(&ctx.fixtures)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let mut pids = line.split_whitespace().map(str::parse::<u32>);
        let worker: u32 = pids.next().context("the host printed no worker pid")??;
        let grandchild: u32 = pids
            .next()
            .context("the host printed no grandchild pid")??;
        let t = Instant::now();
        child.kill()?;
        let deadline = t + GIVE_UP;
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
        let mut survivors = Vec::new();
        for (pid, gone) in [(worker, worker_gone), (grandchild, grandchild_gone)] {
            if gone.is_none() {
                survivors.push(pid);
                if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                    _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
        }
        let (Some(w), Some(g)) = (worker_gone, grandchild_gone) else {
            bail!(
                "pid(s) {survivors:?} outlived their {mode} host by {} s (killed now)",
                GIVE_UP.as_secs()
            );
        };
        workers.push(w);
        everything.push(w.max(g));
    }
    Ok((ms(median(workers)), ms(median(everything))))
}

/// SIGKILL the fixture host, whose worker's plugin has started a grandchild, with the
/// worker in `mode` (`idle`, or busy in a `c_call` or in `pure_python`): the time until
/// both are gone is judged as `key`.
pub(crate) fn host_death(r: &mut Report, ctx: &Ctx, mode: &str, key: &'static str) -> Result<()> {
    let (worker_ms, all_ms) = host_death_ms(ctx, mode)?;
    r.figure(&format!("host_death_{mode}_worker_gone_ms"), worker_ms);
    say(&format!(
        "  {mode}: worker gone {worker_ms:.1} ms, worker and grandchild {all_ms:.1} ms"
    ));
    r.judge(key, Reading::plain(all_ms));
    Ok(())
}
