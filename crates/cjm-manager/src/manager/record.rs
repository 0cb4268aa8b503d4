//! Empirical footprints: every call's sample (peak RAM, GPU memory, duration,
//! outcome) goes into the reference's empirical store, keyed by (instance,
//! config hash), and the record comes back as the evidence of the instance's
//! expected footprint.
//!
//! The call path only hands a few numbers to a bounded queue (never waits on
//! it: a full queue drops the sample and counts it). A recorder thread takes
//! them in batches of up to 100 ms: one peak reading per worker per batch (the resident
//! high-water mark since the last batch, then reset), the GPU memory the latest
//! sample shows the worker holding, the CPU percent of the worker's tree since
//! the previous batch's sample (as the reference's worker reports `cpu_percent`
//! at the end of a call: over the time since it was last asked), and one store
//! transaction per instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use cjm_stores::ResourceSample;

use super::threads::Shutdown;
use super::{Inner, Manager};
use crate::instance::lock;

/// How many ended calls may wait for the recorder before samples are dropped.
const QUEUE: usize = 4096;

/// One ended call.
#[derive(Debug)]
pub(super) struct Ended {
    /// Its instance (its ids are read off the call path).
    pub(super) inst: Arc<crate::instance::Instance>,
    pub(super) config_hash: Arc<str>,
    pub(super) pid: Option<u32>,
    pub(super) duration: Duration,
    pub(super) success: bool,
    pub(super) at: SystemTime,
}

/// The call path's end of the queue.
#[derive(Debug, Default)]
pub(super) struct Recorder {
    sender: Mutex<Option<SyncSender<Ended>>>,
    /// Whether the thread runs: the call path's one look before timing a call.
    on: AtomicBool,
    /// Samples dropped because the queue was full.
    pub(super) dropped: AtomicU64,
}

impl Recorder {
    /// Queues `ended`, or counts it dropped; never blocks.
    pub(super) fn send(&self, ended: Ended) {
        let sender = lock(&self.sender);
        let Some(tx) = sender.as_ref() else { return };
        if let Err(TrySendError::Full(_)) = tx.try_send(ended) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether samples are being taken.
    pub(super) fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Closes the queue: the recorder thread writes what is queued and ends.
    pub(super) fn close(&self) {
        self.on.store(false, Ordering::Relaxed);
        lock(&self.sender).take();
    }
}

impl Manager {
    /// Starts the recorder thread, unless it runs or samples are not kept
    /// (`persist` off, or `substrate.empirical_tracking` false).
    pub(super) fn start_recorder(&self) -> std::io::Result<()> {
        if !self.inner.stores.empirical_on() || !self.inner.cfg.substrate.empirical_tracking {
            return Ok(());
        }
        let mut sender = lock(&self.inner.recorder.sender);
        if sender.is_some() {
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let weak = Arc::downgrade(&self.inner);
        let shutdown = self.inner.threads.shutdown();
        self.inner
            .threads
            .start_recorder(move || record(&weak, &shutdown, &rx))?;
        *sender = Some(tx);
        self.inner.recorder.on.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// How long the recorder gathers samples after the first of a batch: at most
/// this many writes a second, whatever the call rate.
const BATCH: Duration = Duration::from_millis(100);

/// The recorder thread: batches until the queue closes. After the first call
/// of a batch it waits out the batch's time on the shutdown signal, not on the
/// queue, so the calls meanwhile never wake it.
fn record(inner: &Weak<Inner>, shutdown: &Shutdown, rx: &Receiver<Ended>) {
    let mut cpu = CpuReadings::default();
    while let Ok(first) = rx.recv() {
        shutdown.wait(BATCH);
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(QUEUE));
        let Some(inner) = inner.upgrade() else { return };
        Manager { inner }.write(batch, &mut cpu);
    }
}

/// Each worker's tree CPU time at the sample the last batch read, and when
/// that sample was taken (the manager's clock).
#[derive(Default)]
struct CpuReadings(HashMap<u32, (f64, Duration)>);

impl CpuReadings {
    /// The CPU percent of `pid`'s tree between the sample the previous batch
    /// read and `snapshot` (0 on its first batch, or when no time passed).
    fn percent(&mut self, pid: u32, snapshot: &super::monitor::Snapshot) -> f64 {
        let Some(now) = snapshot.usage.get(&pid).map(|u| u.cpu_seconds) else {
            return 0.0;
        };
        let at = snapshot.taken_at;
        match self.0.insert(pid, (now, at)) {
            Some((before, then)) if at > then => {
                100.0 * (now - before).max(0.0) / at.saturating_sub(then).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

impl Manager {
    fn write(&self, batch: Vec<Ended>, cpu: &mut CpuReadings) {
        let snapshot = self.inner.monitor.latest();
        let mut peaks: HashMap<u32, u64> = HashMap::new();
        let mut percents: HashMap<u32, f64> = HashMap::new();
        let mut groups: HashMap<(String, Arc<str>), (String, Vec<ResourceSample>)> = HashMap::new();
        for e in batch {
            let ram = e.pid.map_or(0, |pid| {
                *peaks.entry(pid).or_insert_with(|| {
                    cjm_sched::process::peak_and_reset(pid).map_or(0, |p| p.rss_peak_bytes)
                })
            });
            let vram = e
                .pid
                .and_then(|pid| snapshot.held.get(&pid))
                .map_or(0, |f| f.vram_bytes);
            let cpu_percent = e.pid.map_or(0.0, |pid| {
                *percents
                    .entry(pid)
                    .or_insert_with(|| cpu.percent(pid, &snapshot))
            });
            let mb = |bytes: u64| bytes as f64 / cjm_sched::amount::MB as f64;
            let sample = ResourceSample {
                cpu_percent,
                memory_mb_peak: mb(ram),
                gpu_memory_mb_peak: mb(vram),
                duration_seconds: e.duration.as_secs_f64(),
                success: e.success,
                observed_at: e.at,
                api_usage: None,
            };
            groups
                .entry((e.inst.id.clone(), e.config_hash))
                .or_insert_with(|| (e.inst.plugin.clone(), Vec::new()))
                .1
                .push(sample);
        }
        // Workers gone since (a pid may come back as another process).
        cpu.0.retain(|pid, _| snapshot.usage.contains_key(pid));
        for ((instance, hash), (plugin, samples)) in groups {
            let record = self
                .inner
                .stores
                .record_samples(&instance, &plugin, &hash, &samples)
                .and_then(|()| self.inner.stores.empirical(&instance, &hash));
            match record {
                Ok(record) => {
                    if let Some(inst) = self.get(&instance)
                        && *lock(&inst.config_hash) == hash
                    {
                        lock(&inst.placement).record = record;
                    }
                }
                Err(e) => tracing::warn!(
                    "cannot record {} call sample(s) of instance {instance} of plugin {plugin}: {e}",
                    samples.len()
                ),
            }
        }
    }
}
