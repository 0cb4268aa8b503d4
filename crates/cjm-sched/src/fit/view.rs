//! What one admission decision looks at: the machine's free memory, each GPU's,
//! and every loaded instance with what it holds now. The manager builds it from
//! the latest monitor sample; the scheduler never samples on the call path.

use std::time::Duration;

use crate::footprint::{Expected, Footprint};

/// What an instance's worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Loaded, no call running: it can be evicted.
    Idle,
    /// Running at least one call.
    Busy,
    /// Its worker is starting.
    Starting,
    /// Its worker is being stopped.
    Stopping,
    /// Kept loaded by the manager (the system monitor): never evicted.
    Kept,
}

impl Activity {
    /// How it reads in a reason: "running a call", "starting", …
    pub fn words(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Busy => "running a call",
            Self::Starting => "starting",
            Self::Stopping => "being stopped",
            Self::Kept => "kept loaded as the system monitor",
        }
    }
}

/// One loaded instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// Its instance id.
    pub instance: String,
    /// Its plugin.
    pub plugin: String,
    /// What its worker is doing (the scheduler's own claims also make it busy).
    pub activity: Activity,
    /// When its last call ended or it was loaded, on the scheduler's clock.
    pub last_used: Duration,
    /// What its worker (with its children) holds now.
    pub held: Footprint,
    /// The GPU it is pinned to, if any.
    pub device: Option<u32>,
    /// How long loading it took, in milliseconds (0 when unknown): the cost of
    /// evicting it.
    pub reload_ms: f64,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its index (`CUDA_VISIBLE_DEVICES`).
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its memory, in bytes.
    pub total_bytes: u64,
    /// Its memory no one holds now, in bytes.
    pub free_bytes: u64,
}

/// Everything one decision looks at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// RAM a new allocation can get now (`MemAvailable`, capped by a cgroup limit).
    pub ram_free_bytes: u64,
    /// The most RAM there could ever be.
    pub ram_capacity_bytes: u64,
    /// The GPUs.
    pub devices: Vec<Device>,
    /// Why there are no GPUs, when there are none.
    pub no_gpu_reason: Option<String>,
    /// Every loaded instance, as the manager knows them at the decision (not
    /// from a sample: an instance listed here that is already gone would be
    /// counted as holding what it needs).
    pub loaded: Vec<Loaded>,
    /// The most workers that may be loaded at once, if limited.
    pub max_workers: Option<usize>,
    /// When the samples behind it were taken, on the scheduler's clock: a call
    /// that ended after this is not in them yet, and its reservation still counts.
    pub sampled_at: Duration,
}

impl View {
    /// The loaded instance with this id.
    pub fn loaded(&self, instance: &str) -> Option<&Loaded> {
        self.loaded.iter().find(|l| l.instance == instance)
    }

    /// The device with this index.
    pub fn device(&self, index: u32) -> Option<&Device> {
        self.devices.iter().find(|d| d.index == index)
    }
}

/// A call that asks to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The instance it is for.
    pub instance: String,
    /// Its plugin.
    pub plugin: String,
    /// What the instance is expected to need while it runs the call.
    pub expected: Expected,
    /// Whether the plugin needs a GPU even where no GPU memory is expected.
    pub requires_gpu: bool,
    /// The instance's concurrency cap (`max_concurrent_requests`), if any.
    pub max_concurrent: Option<usize>,
}

impl Request {
    /// What it needs.
    pub fn needs(&self) -> Footprint {
        self.expected.footprint
    }

    /// Whether it must be placed on a GPU.
    pub fn wants_gpu(&self) -> bool {
        self.requires_gpu || self.expected.footprint.vram_bytes > 0
    }
}
