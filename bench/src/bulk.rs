//! Large payloads through shared memory: a 512 MiB argument handed to the worker and
//! back, and a 512 MiB result the plugin writes in full.
//!
//! The bulk figure times the call alone: the 512 MiB are written into the segment
//! before the clock starts (that fill is a memcpy, reported on its own as
//! `bulk_fill_ms`), so the figure is what the channel costs, not a copy that dwarfs
//! it. The output figures time a plugin that writes every byte of its result, against
//! a `memset` of the same size here (into fresh pages, and into pages already faulted);
//! the hand-over alone (a plugin that writes 4 bytes) is kept as an informational
//! figure.

use std::sync::Weak;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use cjm_proto::{Buffer, Segment, Value};
use cjm_proxy::{CallOptions, Worker};

use crate::report::{Reading, Report, say};
use crate::{median, ms};

pub(crate) const BULK_LEN: usize = 512 << 20;
const ROUNDS: usize = 5;
/// Every this many bytes of a result, one is checked.
const CHECK_STRIDE: usize = 4096;

/// Waits (bounded) until the worker has released every frame that lent `segment`,
/// so the next allocation can reuse it.
fn wait_released(segment: &Weak<Segment>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while segment.upgrade().is_some_and(|s| s.outstanding() > 0) {
        if Instant::now() > deadline {
            bail!("the worker did not release the bulk segment within 10 s");
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(())
}

/// memcpy between two pre-faulted buffers, GB/s.
fn memcpy_gbps(src: &[u8]) -> f64 {
    let mut dst = vec![1u8; src.len()];
    dst.copy_from_slice(src);
    let mut copies = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        dst.copy_from_slice(src);
        copies.push(t.elapsed());
        std::hint::black_box(&dst);
    }
    src.len() as f64 / 1e9 / median(copies).as_secs_f64()
}

/// 512 MiB host → worker → host: the echo call that hands the segment over and gets
/// it back as `Buffer::Shm`, timed without the fill.
pub(crate) fn bulk(r: &mut Report, w: &Worker) -> Result<()> {
    let src: Vec<u8> = (0..BULK_LEN).map(|i| (i >> 12) as u8).collect();
    let memcpy = memcpy_gbps(&src);
    let (mut fills, mut calls, mut seg_ids) = (Vec::new(), Vec::new(), Vec::new());
    let mut last: Option<Weak<Segment>> = None;
    for round in 0..=ROUNDS {
        if let Some(seg) = &last {
            wait_released(seg)?;
        }
        let mut buf = w.alloc(BULK_LEN)?;
        seg_ids.push(buf.segment().id());
        last = Some(std::sync::Arc::downgrade(buf.segment()));
        let t = Instant::now();
        buf.as_mut_slice().copy_from_slice(&src);
        let filled = t.elapsed();
        let sent = Buffer::Shm(buf.freeze());
        let t = Instant::now();
        let back = w.execute_blocking(vec![Value::Bytes(sent)], vec![])?;
        let call = t.elapsed();
        let Value::Bytes(back) = back else {
            bail!("echo answered a non-bytes value");
        };
        if !back.is_shared() || back.len() != BULK_LEN || back[BULK_LEN - 1] != src[BULK_LEN - 1] {
            bail!("the 512 MiB echo came back wrong");
        }
        drop(back);
        if round > 0 {
            fills.push(filled);
            calls.push(call);
        }
    }
    let call = median(calls);
    let gbps = BULK_LEN as f64 / 1e9 / call.as_secs_f64();
    let reused = seg_ids.windows(2).skip(1).all(|p| p[0] == p[1]);
    let fill_ms = ms(median(fills));
    r.figure("memcpy_gbps", memcpy);
    r.figure("bulk_gbps", gbps);
    r.figure("bulk_fill_ms", fill_ms);
    r.figure("bulk_call_ms", ms(call));
    say(&format!(
        "  call {:.2} ms ({gbps:.0} GB/s) against memcpy {memcpy:.1} GB/s; the fill alone {fill_ms:.1} ms",
        ms(call),
    ));
    r.judge("bulk_512mb_ratio", Reading::ratio(gbps, memcpy));
    r.judge(
        "bulk_segment_reused",
        Reading::plain(if reused { 1.0 } else { 0.0 }),
    );
    Ok(())
}

/// `memset` of `BULK_LEN` bytes here: into fresh pages (each faulted in, as a new
/// segment's are) and into pages already faulted; ms, medians.
fn memset_floors() -> (f64, f64) {
    let (mut fresh, mut warm) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let t = Instant::now();
        // calloc'd pages are mapped on first write, like a new segment's.
        let mut v = vec![0u8; BULK_LEN];
        v.fill(round as u8 + 1);
        fresh.push(t.elapsed());
        let t = Instant::now();
        v.fill(round as u8 + 2);
        warm.push(t.elapsed());
        std::hint::black_box(&v);
    }
    (ms(median(fresh)), ms(median(warm)))
}

/// Calls the plugin for a 512 MiB shared-memory result whose bytes all equal `byte`
/// (or that starts with `b"cjm!"`, for the hand-over plugin); the median of `ROUNDS`
/// after a warm-up, ms, each result checked every `CHECK_STRIDE` bytes outside the
/// timing. Results are held until the end, so a plugin that allocates gets a new
/// segment every call, never one the previous call's release returned to its pool.
fn output(w: &Worker, kwargs: &[(&str, Value)], every_byte: bool) -> Result<f64> {
    let mut samples = Vec::new();
    let mut held = Vec::new();
    for round in 0..=ROUNDS {
        let byte = (round % 250 + 1) as u8;
        let mut kw: Vec<(String, Value)> = kwargs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        kw.push(("size".into(), Value::Int(BULK_LEN as i64)));
        if every_byte {
            kw.push(("byte".into(), Value::Int(i64::from(byte))));
        }
        let t = Instant::now();
        let v = w.call_blocking("execute", vec![], kw, CallOptions::default())?;
        let dt = t.elapsed();
        let Value::Bytes(b) = v else {
            bail!("the shm plugin answered {v:?}");
        };
        if !b.is_shared() || b.len() != BULK_LEN {
            bail!("the result is not a 512 MiB shared buffer");
        }
        if every_byte {
            let wrong = (0..BULK_LEN)
                .step_by(CHECK_STRIDE)
                .chain([BULK_LEN - 1])
                .find(|&i| b[i] != byte);
            if let Some(i) = wrong {
                bail!("byte {i} of the result is {}, not {byte}", b[i]);
            }
        } else if &b[..4] != b"cjm!" {
            bail!("the hand-over result does not start with cjm!");
        }
        held.push(b);
        if round > 0 {
            samples.push(dt);
        }
    }
    Ok(ms(median(samples)))
}

/// The plugin writes all 512 MiB of its result: into a new segment each call, and into
/// one it keeps (allocation excluded); and, for comparison, the hand-over of a result
/// whose plugin writes 4 bytes.
pub(crate) fn shm_output(r: &mut Report, fill: &Worker, echo: &Worker) -> Result<()> {
    let (fresh_ms, warm_ms) = memset_floors();
    r.figure("memset_fresh_512mb_ms", fresh_ms);
    r.figure("memset_512mb_ms", warm_ms);
    let new_each = output(fill, &[], true)?;
    r.judge("shm_output_512mb_ms", Reading::plain(new_each));
    r.figure("shm_output_512mb_ratio", new_each / fresh_ms);
    let kept = output(fill, &[("keep", Value::Bool(true))], true)?;
    r.judge("shm_output_512mb_alloc_excluded_ms", Reading::plain(kept));
    r.figure("shm_output_512mb_alloc_excluded_ratio", kept / warm_ms);
    let handover = output(echo, &[("action", Value::Str("shm".into()))], false)?;
    r.figure("shm_handover_512mb_ms", handover);
    say(&format!(
        "  plugin writes 512 MiB: new segment {new_each:.1} ms (memset into fresh pages here {fresh_ms:.1} ms), \
         kept segment {kept:.1} ms (memset {warm_ms:.1} ms); hand-over alone {handover:.2} ms"
    ));
    Ok(())
}
