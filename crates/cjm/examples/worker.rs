//! One plugin class in its own worker process, called directly (no manifest, no
//! manager): the README's first example.
//!
//! `cargo run -p cjm --example worker -- PYTHON PLUGIN_DIR`, where `PYTHON` is an
//! interpreter with the `cjm-worker` wheel installed (`cargo xtask wheel` puts it in
//! `target/cjm/venv`) and `PLUGIN_DIR` holds `demo_plugins.py` (`examples/plugins`).

#![expect(clippy::print_stdout, reason = "an example program prints what it got")]

use std::path::PathBuf;

use cjm::proto::Value;
use cjm::proxy::{CallOptions, CancelPolicy, Worker, WorkerSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let python = args
        .next()
        .unwrap_or_else(|| "target/cjm/venv/bin/python".into());
    let plugins = args.next().unwrap_or_else(|| "examples/plugins".into());
    run(&python, &plugins)
}

/// Starts `TextStats` and `Transcriber` from `plugins` with `python`, and calls them.
pub(crate) fn run(
    python: &std::path::Path,
    plugins: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    // Its own process, with a clean environment: the host's variables stay here.
    let spec =
        WorkerSpec::new("text-stats", python, "demo_plugins", "TextStats").python_path(plugins);
    let worker = Worker::spawn(spec)?;
    let config = Value::map([("lowercase", Value::Bool(true))]);
    worker.call_blocking("initialize", vec![config], vec![], CallOptions::default())?;
    let stats = worker.execute_blocking(vec![Value::from("A b a")], vec![])?; // or `.execute(..).await`
    println!("stats: {}", stats.to_json());
    worker.stop_blocking(); // cleanup(), then SIGTERM, then SIGKILL

    let spec =
        WorkerSpec::new("transcriber", python, "demo_plugins", "Transcriber").python_path(plugins);
    let transcriber = Worker::spawn(spec)?;
    let segments = vec![("segments".to_owned(), Value::Int(3))];
    for chunk in transcriber.stream(vec![], segments)? {
        // Each chunk is a Result: a plugin can fail, or its worker die, mid-stream.
        println!("segment: {}", chunk?.to_json());
    }
    // A cancellable call: cooperative first, then an interrupt, then kill and restart.
    let call = transcriber.start(
        "execute",
        vec![],
        vec![("segments".to_owned(), Value::Int(100))],
    )?;
    transcriber.cancel_blocking(call.id(), CancelPolicy::default())?;
    println!("cancelled: {}", call.wait().is_err());
    transcriber.stop_blocking();
    Ok(())
}
