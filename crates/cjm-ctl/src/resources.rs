//! `cjm-ctl resources`: what the scheduler sees — the machine's memory, the GPUs,
//! what each installed plugin is expected to need, and (with `--load`) what each
//! loaded instance's worker holds once started.

use std::io::Write;
use std::process::ExitCode;

use cjm::manager::{LoadSpec, Manager, ManagerOptions, Resources};
use cjm::sched::amount::show;
use serde_json::{Value, json};

use crate::ctx::{Ctx, Global};

/// Show what the scheduler sees: memory, GPUs, footprints, waiting calls.
///
/// Without `--load` it reads the machine and the installed plugins' expected
/// footprints. With `--load PLUGIN` (repeatable) it starts those plugins' workers
/// here first, as a host would, and shows what each holds: a quick way to learn a
/// plugin's real footprint before declaring it in `resources.min_system_ram_mb`.
/// With `--system-monitor PLUGIN` that installed system-monitor plugin (the
/// reference's `get_system_status` / `list_processes` contract) is started and
/// its readings shown beside cjm's own.
#[derive(clap::Args)]
pub(crate) struct ResourcesArgs {
    /// Start this installed plugin's worker and show what it holds (repeatable).
    #[arg(long = "load", value_name = "PLUGIN")]
    load: Vec<String>,
    /// Start this installed system-monitor plugin and read through it too.
    #[arg(long = "system-monitor", value_name = "PLUGIN")]
    system_monitor: Option<String>,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(a: &ResourcesArgs, g: &Global) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::load(g)?;
    let manager = Manager::new(
        ctx.cfg.clone(),
        ManagerOptions {
            reap_interval: None,
            monitor_interval: None,
            ..ManagerOptions::default()
        },
    );
    let discovery = ctx.discover();
    for plugin in a.load.iter().chain(&a.system_monitor) {
        if manager.manifest(plugin).is_none() {
            return Err(crate::ctx::not_installed(plugin, &discovery));
        }
    }
    let specs: Vec<LoadSpec> = a.load.iter().map(LoadSpec::new).collect();
    let mut failed = false;
    for (plugin, outcome) in a.load.iter().zip(manager.load_many(&specs)) {
        if let Err(e) = outcome {
            failed = true;
            crate::call::report_manager(&e);
            eprintln!("(plugin {plugin} is left out below)");
        }
    }
    if let Some(plugin) = &a.system_monitor {
        let registered = manager
            .load(&LoadSpec::new(plugin.as_str()))
            .and_then(|id| manager.register_system_monitor(&id));
        if let Err(e) = registered {
            let code = crate::call::report_manager(&e);
            manager.unload_all();
            return Ok(code);
        }
    }
    let r = manager.refresh_resources();
    let mut plugins: Vec<(String, Option<cjm::manager::Expected>)> = discovery
        .found
        .iter()
        .map(|d| {
            let name = d.manifest.code.name.clone();
            let expected = manager.expected_footprint(&name);
            (name, expected)
        })
        .collect();
    plugins.sort_by(|x, y| x.0.cmp(&y.0));
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", to_json(&r, &plugins))?;
    } else {
        print(&mut out, &r, &plugins)?;
    }
    drop(out);
    manager.unload_all();
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn to_json(r: &Resources, plugins: &[(String, Option<cjm::manager::Expected>)]) -> Value {
    json!({
        "policy": r.policy,
        "gpu_source": r.gpu_source,
        "ram": {
            "free_bytes": r.ram_free_bytes,
            "capacity_bytes": r.ram_capacity_bytes,
            "reserved_bytes": r.ram_reserved_bytes,
        },
        "devices": r.devices.iter().map(|d| json!({
            "index": d.index,
            "name": d.name,
            "total_bytes": d.total_bytes,
            "free_bytes": d.free_bytes,
            "reserved_bytes": d.reserved_bytes,
        })).collect::<Vec<_>>(),
        "plugins": plugins.iter().map(|(name, e)| json!({
            "name": name,
            "expected": e.map(|e| json!({
                "ram_bytes": e.footprint.ram_bytes,
                "vram_bytes": e.footprint.vram_bytes,
                "basis": e.to_string(),
            })),
        })).collect::<Vec<_>>(),
        "instances": r.instances.iter().map(|i| json!({
            "id": i.id,
            "plugin": i.plugin,
            "state": i.state.as_str(),
            "pid": i.pid,
            "device": i.device,
            "held": {"ram_bytes": i.held.ram_bytes, "vram_bytes": i.held.vram_bytes},
            "processes": i.processes,
            "cpu_seconds": i.cpu_seconds,
            "expected": {
                "ram_bytes": i.expected.footprint.ram_bytes,
                "vram_bytes": i.expected.footprint.vram_bytes,
                "basis": i.expected.to_string(),
            },
            "running": i.running,
        })).collect::<Vec<_>>(),
        "forkservers": r.forkservers.iter().map(|f| json!({
            "python": f.python,
            "pid": f.pid,
            "ram_bytes": f.ram_bytes,
        })).collect::<Vec<_>>(),
        "waiting": r.waiting.iter().map(|w| json!({
            "instance_id": w.instance_id,
            "reason": w.reason,
            "waited_s": w.waited.as_secs_f64(),
        })).collect::<Vec<_>>(),
    })
}

fn print(
    out: &mut impl Write,
    r: &Resources,
    plugins: &[(String, Option<cjm::manager::Expected>)],
) -> std::io::Result<()> {
    writeln!(out, "policy     {}", r.policy)?;
    writeln!(
        out,
        "RAM        {} free of {}",
        show(r.ram_free_bytes),
        show(r.ram_capacity_bytes)
    )?;
    writeln!(out, "GPUs       {}", r.gpu_source)?;
    for d in &r.devices {
        writeln!(
            out,
            "  GPU {}    {}: {} free of {}, {} reserved",
            d.index,
            d.name,
            show(d.free_bytes),
            show(d.total_bytes),
            show(d.reserved_bytes)
        )?;
    }
    writeln!(out, "\nplugins (what a call is expected to need)")?;
    if plugins.is_empty() {
        writeln!(out, "  none installed")?;
    }
    let width = plugins.iter().map(|p| p.0.len()).max().unwrap_or(0);
    for (name, expected) in plugins {
        let e = expected.map_or_else(|| "-".to_owned(), |e| e.to_string());
        writeln!(out, "  {name:width$}  {e}")?;
    }
    if !r.instances.is_empty() {
        writeln!(out, "\ninstances")?;
        let width = r.instances.iter().map(|i| i.id.len()).max().unwrap_or(0);
        for i in &r.instances {
            let gpu_held = if i.held.vram_bytes > 0 {
                format!(", {} GPU", show(i.held.vram_bytes))
            } else {
                String::new()
            };
            let held = format!("{} RAM{gpu_held}", show(i.held.ram_bytes));
            let gpu = i
                .device
                .map_or_else(String::new, |d| format!(" on GPU {d}"));
            writeln!(
                out,
                "  {:width$}  {:8}  holds {held}{gpu} in {} process{}, {:.2} s CPU",
                i.id,
                i.state.as_str(),
                i.processes,
                if i.processes == 1 { "" } else { "es" },
                i.cpu_seconds
            )?;
        }
    }
    if !r.forkservers.is_empty() {
        writeln!(
            out,
            "\nforkservers (one per environment; workers fork from them)"
        )?;
        for f in &r.forkservers {
            writeln!(
                out,
                "  pid {:<8} holds {} RAM  {}",
                f.pid,
                show(f.ram_bytes),
                f.python.display()
            )?;
        }
    }
    if !r.waiting.is_empty() {
        writeln!(out, "\nwaiting")?;
        for w in &r.waiting {
            writeln!(
                out,
                "  {} ({:.1} s): {}",
                w.instance_id,
                w.waited.as_secs_f64(),
                w.reason
            )?;
        }
    }
    Ok(())
}
