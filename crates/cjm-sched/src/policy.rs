//! The scheduling policies a manager can run with: the reference's three, with
//! their semantics, and cjm's default, [`Policy::Fit`].
//!
//! The reference's policies compare the manifest's declared `resources`
//! (`requires_gpu`, `min_gpu_vram_mb`, `min_system_ram_mb`) with a stats snapshot
//! (`gpu_free_memory_mb`, `memory_available_mb`), taken from cjm's monitors or
//! from a system-monitor plugin, and reserve nothing:
//!
//! - `permissive` admits everything;
//! - `safety` refuses a call that does not fit now (the manager then evicts idle
//!   workers and asks again, and fails the call if that does not help); without
//!   GPU stats it admits a GPU plugin without checking RAM either, as the
//!   reference does;
//! - `queue` asks again every `poll_interval` until it fits or `timeout` passes.

use std::fmt;
use std::time::Duration;

use cjm_core::Clock;
use serde_json::{Map, Value};

use crate::amount::to_mb;
use crate::fit::FitOptions;
use crate::gpu::GpuSample;
use crate::machine::MachineSample;

/// How calls are admitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// Everything runs at once (the reference's `PermissiveScheduler`).
    Permissive,
    /// Refuse what does not fit now (the reference's `SafetyScheduler`).
    Safety,
    /// Wait, polling, until it fits (the reference's `QueueScheduler`).
    Queue {
        /// The longest to wait.
        timeout: Duration,
        /// How long between checks.
        poll_interval: Duration,
    },
    /// Measured footprints, reservations, eviction and reasons (cjm's default).
    Fit(FitOptions),
}

impl Default for Policy {
    fn default() -> Self {
        Self::Fit(FitOptions::default())
    }
}

impl Policy {
    /// The reference's `QueueScheduler()` defaults: 300 s, polling every 2 s.
    pub fn queue() -> Self {
        Self::Queue {
            timeout: Duration::from_mins(5),
            poll_interval: Duration::from_secs(2),
        }
    }

    /// Its name: `permissive`, `safety`, `queue` or `fit`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Permissive => "permissive",
            Self::Safety => "safety",
            Self::Queue { .. } => "queue",
            Self::Fit(_) => "fit",
        }
    }

    /// The policy of that name, with its defaults.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "permissive" => Some(Self::Permissive),
            "safety" => Some(Self::Safety),
            "queue" => Some(Self::queue()),
            "fit" => Some(Self::default()),
            _ => None,
        }
    }
}

/// The stats a reference policy reads, from cjm's own monitors: the machine's
/// available memory and the largest free GPU memory (none without a GPU).
pub fn stats(machine: &MachineSample, gpus: &GpuSample) -> Map<String, Value> {
    let mut stats = Map::new();
    stats.insert(
        "memory_available_mb".into(),
        to_mb(machine.free_bytes()).into(),
    );
    if let Some(free) = gpus.devices.iter().map(|d| d.free_bytes).max() {
        stats.insert("gpu_free_memory_mb".into(), to_mb(free).into());
    }
    stats
}

/// Why a reference policy holds a call back.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    /// The plugin.
    pub plugin: String,
    /// `gpu_vram_mb` or `system_ram_mb` (the reference's `ResourceShortfall` names).
    pub resource: &'static str,
    /// What it declared it needs, MB.
    pub needed_mb: f64,
    /// What the stats say is free, MB.
    pub available_mb: f64,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.resource == "gpu_vram_mb" {
            "VRAM"
        } else {
            "RAM"
        };
        write!(
            f,
            "{} needs {}MB {what} and {}MB is available",
            self.plugin,
            trim(self.needed_mb),
            trim(self.available_mb)
        )
    }
}

impl std::error::Error for Blocked {}

fn trim(mb: f64) -> String {
    if mb.fract() == 0.0 && mb.abs() < 1e15 {
        format!("{}", mb as i64)
    } else {
        format!("{mb:.1}")
    }
}

/// The reference's resource check (`_check_resources`) for `safety`
/// (`skip_ram_without_gpu_stats` true, as its early return does) and `queue`.
pub fn check_declared(
    plugin: &str,
    resources: Option<&Map<String, Value>>,
    stats: &Map<String, Value>,
    skip_ram_without_gpu_stats: bool,
) -> Result<(), Blocked> {
    let Some(reqs) = resources.filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    let number = |map: &Map<String, Value>, key: &str| map.get(key).and_then(Value::as_f64);
    if reqs.get("requires_gpu").and_then(Value::as_bool) == Some(true) {
        let needed = number(reqs, "min_gpu_vram_mb").unwrap_or(0.0);
        match number(stats, "gpu_free_memory_mb") {
            None if skip_ram_without_gpu_stats => {
                tracing::warn!(
                    plugin,
                    "no GPU stats are available; {plugin} is admitted unchecked"
                );
                return Ok(());
            }
            Some(available) if needed > available => {
                return Err(Blocked {
                    plugin: plugin.to_owned(),
                    resource: "gpu_vram_mb",
                    needed_mb: needed,
                    available_mb: available,
                });
            }
            _ => {}
        }
    }
    let needed = number(reqs, "min_system_ram_mb").unwrap_or(0.0);
    match number(stats, "memory_available_mb") {
        Some(available) if needed > available => Err(Blocked {
            plugin: plugin.to_owned(),
            resource: "system_ram_mb",
            needed_mb: needed,
            available_mb: available,
        }),
        _ => Ok(()),
    }
}

/// The reference's `QueueScheduler.allocate`: check, and until it passes, give
/// up once `timeout` has passed since the start or sleep `poll_interval` on
/// `clock` and check again.
pub fn poll_until_fits(
    clock: &dyn Clock,
    timeout: Duration,
    poll_interval: Duration,
    mut check: impl FnMut() -> Result<(), Blocked>,
) -> Result<(), Blocked> {
    let start = clock.now();
    loop {
        let blocked = match check() {
            Ok(()) => return Ok(()),
            Err(blocked) => blocked,
        };
        if clock.now().saturating_sub(start) > timeout {
            return Err(blocked);
        }
        tracing::info!("{blocked}; checking again in {poll_interval:?}");
        clock.sleep(poll_interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cjm_core::ManualClock;

    fn map(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).expect("json")
    }

    #[test]
    fn without_requirements_everything_is_admitted() {
        let stats = map(r#"{"memory_available_mb": 0, "gpu_free_memory_mb": 0}"#);
        assert_eq!(check_declared("p", None, &stats, true), Ok(()));
        assert_eq!(check_declared("p", Some(&map("{}")), &stats, false), Ok(()));
    }

    #[test]
    fn vram_is_checked_only_for_gpu_plugins_and_equal_amounts_fit() {
        let reqs = map(r#"{"requires_gpu": true, "min_gpu_vram_mb": 4096}"#);
        let fits = map(r#"{"gpu_free_memory_mb": 4096}"#);
        assert_eq!(check_declared("p", Some(&reqs), &fits, false), Ok(()));
        let short = map(r#"{"gpu_free_memory_mb": 4095.5}"#);
        let err = check_declared("p", Some(&reqs), &short, false).expect_err("short");
        assert_eq!(err.resource, "gpu_vram_mb");
        assert_eq!(
            err.to_string(),
            "p needs 4096MB VRAM and 4095.5MB is available"
        );
        let cpu = map(r#"{"requires_gpu": false, "min_gpu_vram_mb": 4096}"#);
        assert_eq!(check_declared("p", Some(&cpu), &short, false), Ok(()));
    }

    #[test]
    fn safety_skips_the_ram_check_without_gpu_stats_and_queue_does_not() {
        let reqs = map(r#"{"requires_gpu": true, "min_system_ram_mb": 1000}"#);
        let stats = map(r#"{"memory_available_mb": 10}"#);
        assert_eq!(check_declared("p", Some(&reqs), &stats, true), Ok(()));
        let err = check_declared("p", Some(&reqs), &stats, false).expect_err("queue checks RAM");
        assert_eq!(err.resource, "system_ram_mb");
        assert_eq!(err.to_string(), "p needs 1000MB RAM and 10MB is available");
    }

    #[test]
    fn missing_ram_stats_admit() {
        let reqs = map(r#"{"min_system_ram_mb": 1000}"#);
        assert_eq!(check_declared("p", Some(&reqs), &map("{}"), false), Ok(()));
    }

    #[test]
    fn queue_polls_until_it_fits_or_its_timeout_passes() {
        let clock = ManualClock::default();
        let mut tries = 0;
        let out = poll_until_fits(
            &clock,
            Duration::from_secs(10),
            Duration::from_secs(2),
            || {
                tries += 1;
                if tries == 3 { Ok(()) } else { Err(blocked()) }
            },
        );
        assert_eq!(out, Ok(()));
        assert_eq!(clock.now(), Duration::from_secs(4), "two sleeps of 2 s");

        let clock = ManualClock::default();
        let mut tries = 0;
        let out = poll_until_fits(
            &clock,
            Duration::from_secs(5),
            Duration::from_secs(2),
            || {
                tries += 1;
                Err(blocked())
            },
        );
        assert_eq!(out, Err(blocked()));
        assert_eq!(
            tries, 4,
            "checks at 0, 2, 4 and 6 s; 6 s is past the timeout"
        );
    }

    fn blocked() -> Blocked {
        Blocked {
            plugin: "p".into(),
            resource: "system_ram_mb",
            needed_mb: 2.0,
            available_mb: 1.0,
        }
    }

    #[test]
    fn policies_have_the_reference_defaults_and_names() {
        assert_eq!(Policy::default().name(), "fit");
        assert_eq!(
            Policy::from_name("queue"),
            Some(Policy::Queue {
                timeout: Duration::from_mins(5),
                poll_interval: Duration::from_secs(2)
            })
        );
        for name in ["permissive", "safety", "queue", "fit"] {
            assert_eq!(Policy::from_name(name).map(|p| p.name()), Some(name));
        }
        assert_eq!(Policy::from_name("lru"), None);
    }
}
