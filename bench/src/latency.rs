//! Call latency against an honest floor, and pipelined throughput.
//!
//! The floor is the least a Rust⇄Python round trip can cost here: an 8-byte ping-pong
//! over a `SOCK_SEQPACKET` socketpair with a minimal Python echo loop. It waits the way
//! cjm's waiters do, on both sides: spin for 60 µs (yielding the CPU each turn, as
//! `cjm-proxy`'s `Completion` and `cjm-worker`'s job queue do), then park in a blocking
//! `recv`. A floor that parks at once pays a kernel wake-up on every packet, which on
//! this virtual machine swings between 8 and 75 µs from run to run, and is no floor
//! for a caller that spins first.
//!
//! Floor and cjm are measured in alternating repeats, each the p50 and p99 of
//! `SAMPLES` round trips after a warm-up, so that noise lands on both; the figures are
//! the medians over the repeats, and every repeat is kept in `results.json`.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cjm_proto::Value;
use cjm_proxy::{CallOptions, Worker};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use serde_json::json;

use crate::report::{Reading, Report};
use crate::{median, us};

const WARMUP: usize = 2_000;
const SAMPLES: usize = 20_000;
/// Alternating repeats of floor and cjm.
const REPEATS: usize = 5;
const PIPELINED_CALLS: usize = 20_000;
const PIPELINE_DEPTH: usize = 256;
/// How long each side of the floor spins before it parks: what cjm's waiters spin.
const SPIN: Duration = Duration::from_micros(60);

/// The Python side of the floor: echo every packet back, spinning on a non-blocking
/// `recv` (yielding each turn) for `argv[2]` seconds before a blocking one.
const SPIN_ECHO: &str = "import os,socket,sys,time
s=socket.socket(fileno=int(sys.argv[1]))
spin=float(sys.argv[2])
r=s.recv
w=s.send
now=time.perf_counter
yld=os.sched_yield
F=socket.MSG_DONTWAIT
while True:
    end=now()+spin
    while True:
        try:
            b=r(64,F)
            break
        except BlockingIOError:
            if now()>end:
                b=r(64)
                break
            yld()
    if not b: break
    w(b)
";

/// The same loop parking at once: the floor earlier runs reported, kept beside the
/// honest one for comparison.
const PARK_ECHO: &str = "import socket,sys
s=socket.socket(fileno=int(sys.argv[1]))
r=s.recv
w=s.send
while True:
    b=r(64)
    if not b: break
    w(b)
";

/// p50 and p99 of one block of round trips, µs.
#[derive(Clone, Copy)]
struct Percentiles {
    p50: f64,
    p99: f64,
}

fn percentiles(mut v: Vec<Duration>) -> Percentiles {
    v.sort_unstable();
    let at = |q: f64| us(v[((v.len() as f64 * q) as usize).min(v.len() - 1)]);
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Round trips timed one by one, after a warm-up.
fn timed(mut once: impl FnMut() -> Result<()>) -> Result<Percentiles> {
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let t = Instant::now();
        once()?;
        let dt = t.elapsed();
        if i >= WARMUP {
            samples.push(dt);
        }
    }
    Ok(percentiles(samples))
}

/// A Python echo loop on the other end of a socketpair.
struct Echo {
    sock: OwnedFd,
    child: Child,
    spin: bool,
}

impl Echo {
    fn start(python: &Path, spin: bool) -> Result<Self> {
        use rustix::io::{FdFlags, fcntl_setfd};
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .context("socketpair")?;
        // Only the child's end is inherited (nothing else spawns while this runs).
        fcntl_setfd(&theirs, FdFlags::empty()).context("clearing FD_CLOEXEC")?;
        let script = if spin { SPIN_ECHO } else { PARK_ECHO };
        let child = Command::new(python)
            .args(["-c", script])
            .arg(theirs.as_raw_fd().to_string())
            .arg(SPIN.as_secs_f64().to_string())
            .stdin(Stdio::null())
            .spawn()
            .context("spawning the floor's Python echo loop")?;
        drop(theirs);
        Ok(Self {
            sock: ours,
            child,
            spin,
        })
    }

    /// One 8-byte round trip, waiting for the answer as the loop on the other side does.
    fn round_trip(&self) -> Result<()> {
        let msg = [7u8; 8];
        let mut buf = [0u8; 64];
        rustix::net::send(self.sock.as_fd(), &msg, SendFlags::empty()).context("floor: send")?;
        let n = self.recv(&mut buf)?;
        if n != msg.len() {
            bail!("the floor's echo loop answered {n} bytes");
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        if self.spin {
            let until = Instant::now() + SPIN;
            loop {
                match rustix::net::recv(self.sock.as_fd(), &mut *buf, RecvFlags::DONTWAIT) {
                    Ok((n, _)) => return Ok(n),
                    Err(rustix::io::Errno::AGAIN) if Instant::now() < until => {
                        std::thread::yield_now();
                    }
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(e) => return Err(e).context("floor: recv"),
                }
            }
        }
        let (n, _) =
            rustix::net::recv(self.sock.as_fd(), buf, RecvFlags::empty()).context("floor: recv")?;
        Ok(n)
    }

    fn stop(self) -> Result<()> {
        let Self {
            sock, mut child, ..
        } = self;
        drop(sock);
        child.wait().context("waiting for the floor's echo loop")?;
        Ok(())
    }
}

fn one() -> Vec<Value> {
    vec![Value::Int(1)]
}

fn sync_call(w: &Worker) -> Result<()> {
    let v = w.call_blocking("execute", one(), vec![], CallOptions::default())?;
    if v != Value::Int(1) {
        bail!("echo answered {v:?}");
    }
    Ok(())
}

/// The floor and the blocking and async calls, in alternating repeats.
pub(crate) fn latency(r: &mut Report, python: &Path, echo: &Worker) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let floor_echo = Echo::start(python, true)?;
    let (mut floors, mut syncs, mut asyncs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPEATS {
        floors.push(timed(|| floor_echo.round_trip())?);
        syncs.push(timed(|| sync_call(echo))?);
        asyncs.push(rt.block_on(async_block(echo))?);
    }
    floor_echo.stop()?;
    let parked = Echo::start(python, false)?;
    let park = timed(|| parked.round_trip())?;
    parked.stop()?;

    let mid = |v: &[Percentiles], p: fn(&Percentiles) -> f64| {
        let mut x: Vec<f64> = v.iter().map(p).collect();
        x.sort_unstable_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let (floor50, floor99) = (mid(&floors, |p| p.p50), mid(&floors, |p| p.p99));
    let (sync50, sync99) = (mid(&syncs, |p| p.p50), mid(&syncs, |p| p.p99));
    let (async50, async99) = (mid(&asyncs, |p| p.p50), mid(&asyncs, |p| p.p99));
    r.figure("floor_p50_us", floor50);
    r.figure("floor_p99_us", floor99);
    r.figure("floor_parked_p50_us", park.p50);
    r.figure("floor_parked_p99_us", park.p99);
    r.figure("sync_p50_us", sync50);
    r.figure("sync_p99_us", sync99);
    r.figure("sync_p99_ratio", sync99 / floor99);
    r.figure("async_p50_us", async50);
    r.figure("async_p99_us", async99);
    r.figure("async_p99_ratio", async99 / floor99);
    let repeats: Vec<_> = (0..REPEATS)
        .map(|i| {
            json!({
                "floor_p50_us": floors[i].p50, "floor_p99_us": floors[i].p99,
                "sync_p50_us": syncs[i].p50, "sync_p99_us": syncs[i].p99,
                "async_p50_us": asyncs[i].p50, "async_p99_us": asyncs[i].p99,
            })
        })
        .collect();
    r.figure("latency_repeats", repeats);
    crate::report::say(&format!(
        "  floor (spin, then park) p50 {floor50:.1} µs p99 {floor99:.1} µs; parked at once p50 {:.1} µs; \
         sync p50 {sync50:.1} p99 {sync99:.1}; async p50 {async50:.1} p99 {async99:.1} ({REPEATS} repeats)",
        park.p50
    ));
    r.judge("sync_p50_ratio", Reading::ratio(sync50, floor50));
    r.judge("async_p50_ratio", Reading::ratio(async50, floor50));
    Ok(())
}

async fn async_block(w: &Worker) -> Result<Percentiles> {
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let t = Instant::now();
        let v = w
            .call("execute", one(), vec![], CallOptions::default())
            .await?;
        let dt = t.elapsed();
        if v != Value::Int(1) {
            bail!("echo answered {v:?}");
        }
        if i >= WARMUP {
            samples.push(dt);
        }
    }
    Ok(percentiles(samples))
}

/// Calls/s with up to `PIPELINE_DEPTH` calls in flight, started with `start()` and
/// awaited oldest first: the median of three timed runs after a warm-up.
pub(crate) fn pipelined(r: &mut Report, w: &Worker) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
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
    rt.block_on(run(2_000))?;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(rt.block_on(run(PIPELINED_CALLS))?);
    }
    let per_s = PIPELINED_CALLS as f64 / median(runs).as_secs_f64();
    r.judge("pipelined_calls_per_s", Reading::plain(per_s));
    Ok(())
}
