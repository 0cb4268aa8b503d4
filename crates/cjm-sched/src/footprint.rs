//! What a call is expected to need: the manifest's declared `resources` as the
//! prior, the empirical record of earlier calls as the evidence, with a margin.
//!
//! The declared amounts are the reference's `SafetyScheduler` keys in the
//! manifest's `resources` block, `min_system_ram_mb` and `min_gpu_vram_mb`. Once
//! calls have been measured, the largest peak seen plus the margin is expected,
//! and never less than what was declared (a declared minimum is a promise the
//! author made about inputs not yet seen).

use cjm_stores::EmpiricalRecord;
use serde_json::{Map, Value};

use crate::amount::{self, from_mb};

/// How much the largest measured peak is raised by default: 10 %.
pub const DEFAULT_MARGIN: f64 = 0.10;

/// Memory an instance needs while it runs a call: its whole worker, not only
/// what the call adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Resident memory, in bytes.
    pub ram_bytes: u64,
    /// GPU memory on its device, in bytes.
    pub vram_bytes: u64,
}

impl Footprint {
    /// A footprint of whole MB.
    pub fn mb(ram_mb: u64, vram_mb: u64) -> Self {
        Self {
            ram_bytes: ram_mb * amount::MB,
            vram_bytes: vram_mb * amount::MB,
        }
    }

    /// The larger of each part.
    #[must_use]
    pub fn max(self, other: Self) -> Self {
        Self {
            ram_bytes: self.ram_bytes.max(other.ram_bytes),
            vram_bytes: self.vram_bytes.max(other.vram_bytes),
        }
    }
}

/// Where an expected footprint comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Basis {
    /// Neither declared nor measured: expected to need nothing.
    Unknown,
    /// The manifest's `resources` block only.
    Declared,
    /// Measured calls (with the margin), at least the declared amounts.
    Measured {
        /// How many calls were measured.
        samples: i64,
        /// The margin added to the largest peak.
        margin: f64,
    },
}

/// An expected footprint and its basis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    /// What is expected.
    pub footprint: Footprint,
    /// Why.
    pub basis: Basis,
}

impl std::fmt::Display for Expected {
    /// "2.0 GB RAM, 6.0 GB GPU (measured over 14 calls, +10 %)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fp = self.footprint;
        write!(f, "{} RAM", amount::show(fp.ram_bytes))?;
        if fp.vram_bytes > 0 {
            write!(f, ", {} GPU", amount::show(fp.vram_bytes))?;
        }
        match self.basis {
            Basis::Unknown => write!(f, " (not declared, not yet measured)"),
            Basis::Declared => write!(f, " (declared)"),
            Basis::Measured { samples, margin } => {
                let s = if samples == 1 { "" } else { "s" };
                write!(
                    f,
                    " (measured over {samples} call{s}, +{:.0} %)",
                    margin * 100.0
                )
            }
        }
    }
}

/// The amounts of a `resources` block, in MB: each must be a finite number,
/// not negative (`max_system_ram_mb`, a hard limit, above zero).
pub const AMOUNT_KEYS: [&str; 3] = ["min_system_ram_mb", "min_gpu_vram_mb", "max_system_ram_mb"];

/// The first amount in a `resources` block that is not a number of MB, as
/// (key, value).
pub fn bad_amount(resources: Option<&Map<String, Value>>) -> Option<(&'static str, Value)> {
    let resources = resources?;
    AMOUNT_KEYS.into_iter().find_map(|key| {
        let value = resources.get(key)?;
        let ok = value.as_f64().is_some_and(|mb| {
            mb.is_finite() && (mb > 0.0 || (mb == 0.0 && key != "max_system_ram_mb"))
        });
        (!ok).then(|| (key, value.clone()))
    })
}

/// The amounts a manifest's `resources` block declares, if any.
pub fn declared(resources: Option<&Map<String, Value>>) -> Option<Footprint> {
    let resources = resources?;
    let mb = |key: &str| resources.get(key).and_then(Value::as_f64).map(from_mb);
    let (ram, vram) = (mb("min_system_ram_mb"), mb("min_gpu_vram_mb"));
    (ram.is_some() || vram.is_some()).then(|| Footprint {
        ram_bytes: ram.unwrap_or(0),
        vram_bytes: vram.unwrap_or(0),
    })
}

/// The expected footprint from what was declared and what was measured.
pub fn expect(
    declared: Option<Footprint>,
    record: Option<&EmpiricalRecord>,
    margin: f64,
) -> Expected {
    let margin = if margin.is_finite() {
        margin.max(0.0)
    } else {
        DEFAULT_MARGIN
    };
    match record.filter(|r| r.sample_count > 0) {
        Some(r) => {
            let raise = |mb: f64| from_mb(mb * (1.0 + margin));
            let measured = Footprint {
                ram_bytes: raise(r.memory_mb_peak_max),
                vram_bytes: raise(r.gpu_memory_mb_peak_max),
            };
            Expected {
                footprint: declared.map_or(measured, |d| d.max(measured)),
                basis: Basis::Measured {
                    samples: r.sample_count,
                    margin,
                },
            }
        }
        None => match declared {
            Some(footprint) => Expected {
                footprint,
                basis: Basis::Declared,
            },
            None => Expected {
                footprint: Footprint::default(),
                basis: Basis::Unknown,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    use super::*;
    use crate::amount::MB;

    fn record(samples: i64, ram_mb: f64, vram_mb: f64) -> EmpiricalRecord {
        EmpiricalRecord {
            instance_id: "i".into(),
            plugin_name: "p".into(),
            config_hash: "sha256:x".into(),
            sample_count: samples,
            success_count: samples,
            cpu_percent_mean: 0.0,
            memory_mb_peak_max: ram_mb,
            memory_mb_peak_mean: ram_mb,
            gpu_memory_mb_peak_max: vram_mb,
            gpu_memory_mb_peak_mean: vram_mb,
            duration_seconds_mean: 0.1,
            success_rate: 1.0,
            last_observed: SystemTime::UNIX_EPOCH,
            api_usage_totals: BTreeMap::new(),
        }
    }

    #[test]
    fn the_reference_keys_declare_a_footprint_and_others_do_not() {
        let block: Map<String, Value> = serde_json::from_str(
            r#"{"requires_gpu": true, "min_gpu_vram_mb": 6144, "min_system_ram_mb": 2048}"#,
        )
        .expect("json");
        assert_eq!(declared(Some(&block)), Some(Footprint::mb(2048, 6144)));
        let none: Map<String, Value> =
            serde_json::from_str(r#"{"requires_gpu": true}"#).expect("json");
        assert_eq!(declared(Some(&none)), None);
        assert_eq!(declared(None), None);
    }

    #[test]
    fn evidence_with_its_margin_outweighs_a_smaller_declaration_but_not_a_larger() {
        let small = expect(
            Some(Footprint::mb(100, 1000)),
            Some(&record(4, 1000.0, 500.0)),
            0.1,
        );
        assert_eq!(small.footprint.ram_bytes, 1100 * MB);
        assert_eq!(small.footprint.vram_bytes, 1000 * MB, "declared VRAM stays");
        assert_eq!(
            small.to_string(),
            "1.1 GB RAM, 1000 MB GPU (measured over 4 calls, +10 %)"
        );
    }

    #[test]
    fn without_samples_the_declaration_stands_and_without_it_nothing_is_expected() {
        let declared_only = expect(Some(Footprint::mb(512, 0)), Some(&record(0, 9.0, 9.0)), 0.1);
        assert_eq!(declared_only.footprint, Footprint::mb(512, 0));
        assert_eq!(declared_only.to_string(), "512 MB RAM (declared)");
        let unknown = expect(None, None, 0.1);
        assert_eq!(unknown.footprint, Footprint::default());
        assert_eq!(
            unknown.to_string(),
            "0 MB RAM (not declared, not yet measured)"
        );
    }
}
