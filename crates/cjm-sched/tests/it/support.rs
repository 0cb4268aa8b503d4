//! Views, requests and schedulers built from a few numbers.

use std::sync::Arc;
use std::time::Duration;

use cjm_core::{ManualClock, SharedClock};
use cjm_sched::fit::{Activity, Device, Loaded, Request, View};
use cjm_sched::{Basis, Decision, Expected, FitOptions, Footprint, Scheduler};

pub(crate) fn scheduler() -> (Scheduler, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::default());
    let shared: SharedClock = clock.clone();
    (Scheduler::new(shared, FitOptions::default()), clock)
}

/// A view with `ram_free_mb` of RAM free and GPUs of (total, free) MB.
pub(crate) fn view(ram_free_mb: u64, gpus: &[(u64, u64)], loaded: Vec<Loaded>) -> View {
    View {
        ram_free_bytes: ram_free_mb << 20,
        ram_capacity_bytes: 64 << 30,
        devices: gpus
            .iter()
            .enumerate()
            .map(|(i, &(total, free))| Device {
                index: i as u32,
                name: format!("Fake GPU {i}"),
                total_bytes: total << 20,
                free_bytes: free << 20,
            })
            .collect(),
        no_gpu_reason: gpus.is_empty().then(|| "no NVIDIA driver".to_owned()),
        loaded,
        max_workers: None,
        sampled_at: Duration::ZERO,
    }
}

/// An instance loaded on `device`, holding (RAM, VRAM) MB, last used at `used_s`.
pub(crate) fn loaded(
    id: &str,
    activity: Activity,
    used_s: u64,
    held_mb: (u64, u64),
    device: Option<u32>,
) -> Loaded {
    Loaded {
        instance: id.to_owned(),
        plugin: format!("{id}-plugin"),
        activity,
        last_used: Duration::from_secs(used_s),
        held: Footprint::mb(held_mb.0, held_mb.1),
        device,
        reload_ms: 100.0,
    }
}

pub(crate) fn idle(id: &str, used_s: u64, held_mb: (u64, u64), device: Option<u32>) -> Loaded {
    loaded(id, Activity::Idle, used_s, held_mb, device)
}

/// A call for `id` whose instance needs (RAM, VRAM) MB.
pub(crate) fn request(id: &str, needs_mb: (u64, u64)) -> Request {
    Request {
        instance: id.to_owned(),
        plugin: format!("{id}-plugin"),
        expected: Expected {
            footprint: Footprint::mb(needs_mb.0, needs_mb.1),
            basis: Basis::Declared,
        },
        requires_gpu: needs_mb.1 > 0,
        max_concurrent: None,
    }
}

/// The device of an admission; any other decision fails the test.
pub(crate) fn admitted_device(d: &Decision) -> Option<u32> {
    match d {
        Decision::Admit(p) => p.device(),
        other => panic!("expected an admission, got {other:?}"),
    }
}

/// The words of a wait.
pub(crate) fn wait_words(d: &Decision) -> String {
    match d {
        Decision::Wait(w, _) => w.to_string(),
        other => panic!("expected a wait, got {other:?}"),
    }
}

/// The words of a refusal.
pub(crate) fn never_words(d: &Decision) -> String {
    match d {
        Decision::Never(n) => n.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The instances an eviction names.
pub(crate) fn victims(d: Decision) -> Vec<String> {
    match d {
        Decision::Evict(v) => v,
        other => panic!("expected an eviction, got {other:?}"),
    }
}
