//! What a run reports: every judged figure against its target, met or not, and for a
//! measurement that failed, why; beside them the figures that only inform (floors,
//! parts, spreads). A failed measurement never drops its targets: they are reported
//! with `met: false` and the error.

use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};

use anyhow::Result;
use serde_json::{Map, Value as Json, json};

/// A judged figure: its key in `results.json`, its target and its unit.
pub(crate) struct Target {
    pub(crate) key: &'static str,
    pub(crate) value: f64,
    /// `true` when the judged figure must be at most `value`.
    pub(crate) at_most: bool,
    pub(crate) unit: &'static str,
}

const fn at_most(key: &'static str, value: f64, unit: &'static str) -> Target {
    Target {
        key,
        value,
        at_most: true,
        unit,
    }
}

const fn at_least(key: &'static str, value: f64, unit: &'static str) -> Target {
    Target {
        key,
        value,
        at_most: false,
        unit,
    }
}

/// Every target the issues set, in the order the table shows them.
pub(crate) const TARGETS: &[Target] = &[
    at_most("sync_p50_ratio", 2.0, "us"),
    at_most("async_p50_ratio", 3.0, "us"),
    at_least("pipelined_calls_per_s", 100_000.0, "calls/s"),
    at_least("bulk_512mb_ratio", 0.5, "GB/s"),
    at_least("bulk_segment_reused", 1.0, "bool"),
    at_most("shm_output_512mb_ms", 5.0, "ms"),
    at_most("shm_output_512mb_alloc_excluded_ms", 5.0, "ms"),
    at_most("spawn_extra_ms", 25.0, "ms"),
    at_most("idle_rss_extra_mb", 6.0, "MiB"),
    at_most("host_death_cleanup_ms", 100.0, "ms"),
    at_most("host_death_busy_c_call_cleanup_ms", 100.0, "ms"),
    at_most("host_death_busy_pure_python_cleanup_ms", 100.0, "ms"),
    at_most("install_warm_s", 1.0, "s"),
    at_most("install_vs_venv_pip_ratio", 0.2, "s"),
    at_most("install_noop_s", 0.3, "s"),
    at_most("manager_call_overhead_us", 5.0, "us"),
    at_most("load_10_instances_ratio", 3.0, "ms"),
    at_most("admission_us", 20.0, "us"),
    at_most("monitor_sample_ms", 5.0, "ms"),
    at_most("evict_reload_ms", 2.0, "ms"),
    at_least("parallel_fit_efficiency", 0.9, "ratio"),
    at_least("queue_jobs_per_s", 10_000.0, "jobs/s"),
    at_least("queue_vs_direct_ratio", 0.5, "ratio"),
    at_least("queue_parallel_efficiency", 0.9, "ratio"),
    at_most("recovery_s", 0.5, "s"),
    at_most("queue_1m_pending_rss_mb", 200.0, "MiB"),
];

fn target(key: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.key == key)
        .unwrap_or_else(|| panic!("bench: no target named {key}"))
}

/// A judged figure as measured: one reading against its target.
pub(crate) struct Reading {
    /// What was measured, in the target's unit.
    pub(crate) value: f64,
    /// The floor measured in the same run, if the figure has one.
    pub(crate) floor: Option<f64>,
    /// `measured ÷ floor`, when that is what is judged.
    pub(crate) ratio: Option<f64>,
    /// The figure compared with the target.
    pub(crate) judged: f64,
}

impl Reading {
    /// A figure judged as it is.
    pub(crate) fn plain(value: f64) -> Self {
        Self {
            value,
            floor: None,
            ratio: None,
            judged: value,
        }
    }

    /// A figure judged as its ratio to a floor.
    pub(crate) fn ratio(value: f64, floor: f64) -> Self {
        Self {
            value,
            floor: Some(floor),
            ratio: Some(value / floor),
            judged: value / floor,
        }
    }

    /// A figure judged as what it adds to a floor.
    pub(crate) fn extra(value: f64, floor: f64) -> Self {
        Self {
            value,
            floor: Some(floor),
            ratio: None,
            judged: value - floor,
        }
    }
}

struct Row {
    target: &'static Target,
    outcome: Result<Reading, String>,
}

impl Row {
    fn met(&self) -> bool {
        match &self.outcome {
            Ok(m) if self.target.at_most => m.judged <= self.target.value,
            Ok(m) => m.judged >= self.target.value,
            Err(_) => false,
        }
    }
}

/// The run's rows and informational figures.
#[derive(Default)]
pub(crate) struct Report {
    rows: Vec<Row>,
    figures: Map<String, Json>,
    /// With `--only`: the measurements run are those promising a key that
    /// contains one of these.
    only: Vec<String>,
}

impl Report {
    /// A report that runs only the measurements promising a key containing one
    /// of `only` (every measurement when it is empty).
    pub(crate) fn only(only: Vec<String>) -> Self {
        Self {
            only,
            ..Self::default()
        }
    }

    /// Whether this run leaves measurements out.
    pub(crate) fn partial(&self) -> bool {
        !self.only.is_empty()
    }

    /// Records a judged figure.
    pub(crate) fn judge(&mut self, key: &'static str, m: Reading) {
        self.rows.push(Row {
            target: target(key),
            outcome: Ok(m),
        });
    }

    /// Records an informational figure.
    pub(crate) fn figure(&mut self, key: &str, value: impl Into<Json>) {
        self.figures.insert(key.into(), value.into());
    }

    /// Runs one measurement that promises the judged figures `keys`. If it fails (an
    /// error or a panic), or returns without one of them, each missing key is
    /// reported as not met, with the reason.
    pub(crate) fn measure(
        &mut self,
        what: &str,
        keys: &[&'static str],
        run: impl FnOnce(&mut Self) -> Result<()>,
    ) {
        if self.partial()
            && !keys
                .iter()
                .any(|k| self.only.iter().any(|o| k.contains(o.as_str())))
        {
            return;
        }
        say(what);
        let outcome = catch_unwind(AssertUnwindSafe(|| run(self)));
        let reason = match outcome {
            Ok(Ok(())) => "the measurement returned without this figure".to_owned(),
            Ok(Err(e)) => format!("{e:#}"),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "a panic".to_owned());
                format!("panicked: {msg}")
            }
        };
        for key in keys {
            if !self.rows.iter().any(|r| r.target.key == *key) {
                say(&format!("  {key}: FAILED: {reason}"));
                self.rows.push(Row {
                    target: target(key),
                    outcome: Err(reason.clone()),
                });
            }
        }
    }

    /// The `results.json` object: informational figures, each judged figure under its
    /// key (`null` when it failed), and `targets` with `met` (and `error` when failed).
    pub(crate) fn to_json(&self) -> Map<String, Json> {
        let mut out = self.figures.clone();
        let mut targets = Map::new();
        for r in self.ordered() {
            let op = if r.target.at_most { "<=" } else { ">=" };
            let mut t = json!({ "op": op, "value": r.target.value, "met": r.met() });
            match &r.outcome {
                Ok(m) => {
                    out.insert(r.target.key.into(), json!(m.judged));
                }
                Err(reason) => {
                    out.insert(r.target.key.into(), Json::Null);
                    t["error"] = json!(reason);
                }
            }
            targets.insert(r.target.key.into(), t);
        }
        out.insert("targets".into(), Json::Object(targets));
        out
    }

    /// Rows in the order of [`TARGETS`].
    fn ordered(&self) -> impl Iterator<Item = &Row> {
        TARGETS
            .iter()
            .filter_map(|t| self.rows.iter().find(|r| r.target.key == t.key))
    }

    /// Prints the table on stderr.
    pub(crate) fn print_table(&self) -> Result<()> {
        let mut e = std::io::stderr().lock();
        writeln!(e)?;
        writeln!(
            e,
            "{:<40} {:>16} {:>14} {:>8} {:>12} {:>5}",
            "key", "measured", "floor", "ratio", "target", "met?"
        )?;
        writeln!(e, "{}", "-".repeat(100))?;
        for r in self.ordered() {
            let t = r.target;
            let target = format!(
                "{} {}",
                if t.at_most { "<=" } else { ">=" },
                fmt_num(t.value)
            );
            let m = match &r.outcome {
                Ok(m) => m,
                Err(reason) => {
                    writeln!(
                        e,
                        "{:<40} FAILED ({reason}) {target:>12} {:>5}",
                        t.key, "NO"
                    )?;
                    continue;
                }
            };
            let measured = format!("{} {}", fmt_num(m.value), t.unit);
            let floor = m
                .floor
                .map_or_else(|| "-".into(), |f| format!("{} {}", fmt_num(f), t.unit));
            let ratio = m.ratio.map_or_else(|| "-".into(), fmt_num);
            let extra = if m.ratio.is_none() && m.floor.is_some() {
                format!(" (extra {})", fmt_num(m.judged))
            } else {
                String::new()
            };
            writeln!(
                e,
                "{:<40} {measured:>16} {floor:>14} {ratio:>8} {target:>12} {:>5}{extra}",
                t.key,
                if r.met() { "yes" } else { "NO" }
            )?;
        }
        writeln!(e)?;
        Ok(())
    }
}

/// A progress line on stderr.
pub(crate) fn say(msg: &str) {
    // stderr is where progress goes; a closed stderr is no reason to stop measuring.
    _ = writeln!(std::io::stderr(), "{msg}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_measurement_reports_its_targets_as_not_met_with_the_reason() {
        let mut r = Report::default();
        r.measure("ok", &["sync_p50_ratio"], |r| {
            r.judge("sync_p50_ratio", Reading::ratio(3.0, 2.0));
            Ok(())
        });
        r.measure("fails", &["install_warm_s", "install_noop_s"], |r| {
            r.judge("install_noop_s", Reading::plain(0.01));
            anyhow::bail!("uv is missing")
        });
        r.measure("panics", &["spawn_extra_ms"], |_| panic!("boom"));
        let out = r.to_json();
        let t = &out["targets"];
        assert_eq!(t["sync_p50_ratio"]["met"], json!(true));
        assert_eq!(out["sync_p50_ratio"], json!(1.5));
        assert_eq!(t["install_noop_s"]["met"], json!(true));
        assert_eq!(t["install_warm_s"]["met"], json!(false));
        assert_eq!(t["install_warm_s"]["error"], json!("uv is missing"));
        assert_eq!(out["install_warm_s"], Json::Null);
        assert_eq!(t["spawn_extra_ms"]["error"], json!("panicked: boom"));
        assert_eq!(t.as_object().map(Map::len), Some(4));
    }
}
