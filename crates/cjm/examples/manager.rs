//! An application's view: one manager for every installed plugin, which starts,
//! configures and supervises their workers. The README's second example.
//!
//! `cargo run -p cjm --example manager -- DATA_DIR PLUGIN`, for a data folder where
//! `cjm-ctl install-all` installed `PLUGIN` (the README's Getting started).

#![expect(clippy::print_stdout, reason = "an example program prints what it got")]

use cjm::core::{LoadOptions, load_config};
use cjm::manager::{LoadSpec, Manager, ManagerEvent, ManagerOptions};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data_dir = args.next().ok_or("usage: manager DATA_DIR PLUGIN")?;
    let plugin = args.next().ok_or("usage: manager DATA_DIR PLUGIN")?;
    run(data_dir.as_ref(), &plugin)
}

/// Loads two instances of `plugin` from `data_dir`, calls them, reports events.
pub(crate) fn run(
    data_dir: &std::path::Path,
    plugin: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    // The same layered configuration as cjm-ctl: flags > CJM_* variables > cjm.yaml > defaults.
    let options = LoadOptions {
        data_dir: Some(data_dir.to_owned()),
        ..LoadOptions::default()
    };
    let cfg = load_config(
        &options,
        &|k| std::env::var(k).ok(),
        &std::env::current_dir()?,
    )?;
    let manager = Manager::new(cfg, ManagerOptions::default()); // discovers installed plugins
    let mut events = manager.subscribe(); // states, crashes, restarts, drift

    // The persisted configuration (or the schema's defaults), validated before any spawn.
    let default = manager.load(&LoadSpec::new(plugin))?;
    // A second instance, its own worker and configuration.
    let config = json!({"repeat": 2})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let second = manager.load(&LoadSpec::new(plugin).instance("twice").config(config))?;
    for id in [&default, &second] {
        let out = manager.execute(id, vec![], vec![("text".into(), "hi".into())])?;
        println!("{id}: {}", out.to_json());
    }
    manager.disable(&second)?; // a disabled instance refuses calls, with a typed error
    if let Err(e) = manager.execute(&second, vec![], vec![]) {
        println!("refused: {e}");
    }
    manager.unload_all();
    while let Ok(event) = events.try_recv() {
        if let ManagerEvent::State {
            instance_id, to, ..
        } = event
        {
            println!("{instance_id} → {}", to.as_str());
        }
    }
    Ok(())
}
