//! `cargo xtask demo`: example plugins in their own worker processes.
//!
//! Needs `CJM_PYTHON`: an interpreter with the cjm-worker package (and numpy)
//! installed, which `cargo xtask demo` prepares.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cjm::proto::{Array, Buffer, Value};
use cjm::proxy::{CallOptions, CancelPolicy, Event, Worker, WorkerError, WorkerSpec};

fn spec(plugin: &str, class: &str) -> WorkerSpec {
    let python = std::env::var_os("CJM_PYTHON").map_or_else(
        || {
            let mut err = std::io::stderr();
            let _ = writeln!(
                err,
                "demo: set CJM_PYTHON, or run `cargo xtask demo`, which does"
            );
            std::process::exit(2);
        },
        PathBuf::from,
    );
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins");
    let mut s = WorkerSpec::new(plugin, python, "demo_plugins", class).python_path(plugins);
    s.log_file = Some(std::env::temp_dir().join(format!("cjm-demo/logs/{plugin}.log")));
    s
}

fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
}

fn heading(n: u32, title: &str) {
    out(&format!("\n\x1b[1m{n}. {title}\x1b[0m"));
}

#[expect(
    clippy::too_many_lines,
    reason = "the demo reads top to bottom, like a script"
)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    out("cjm demo: every plugin below runs in its own Python worker process.");

    heading(1, "A call");
    let started = Instant::now();
    let stats = Worker::spawn(spec("text-stats", "TextStats"))?;
    let spawned = started.elapsed();
    stats.call_blocking(
        "initialize",
        vec![Value::map([("lowercase", Value::Bool(true))])],
        vec![],
        CallOptions::default(),
    )?;
    let text = "The cat sat on the mat and the dog sat on the log";
    let timer = Instant::now();
    let result = stats.execute_blocking(vec![Value::from(text)], vec![])?;
    let call = timer.elapsed();
    out(&format!(
        "   worker pid {} started in {spawned:.0?}",
        stats.pid()
    ));
    out(&format!("   execute({text:?}) -> {}", result.to_json()));
    let n = 2000;
    let timer = Instant::now();
    for _ in 0..n {
        stats.execute_blocking(vec![Value::from("a b c")], vec![])?;
    }
    out(&format!(
        "   first call {call:.0?}; {n} more calls averaged {:.1} µs each",
        timer.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    ));

    heading(2, "A streamed result with progress");
    let tr = Worker::spawn(spec("transcriber", "Transcriber"))?;
    let mut events = tr.events();
    let mut stream = tr.stream(vec![], vec![("segments".into(), Value::Int(8))])?;
    let mut segments = Vec::new();
    while let Some(chunk) = stream.next_blocking() {
        let chunk = chunk?;
        while let Ok(e) = events.try_recv() {
            if let Event::Progress {
                progress, message, ..
            } = e
            {
                let filled = (progress * 30.0).round() as usize;
                let mut o = std::io::stdout().lock();
                let _ = write!(
                    o,
                    "\r   [{}{}] {:>3.0}% {message}   ",
                    "█".repeat(filled),
                    "·".repeat(30 - filled),
                    progress * 100.0
                );
                let _ = o.flush();
            }
        }
        segments.push(
            chunk
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        );
    }
    out("");
    out(&format!("   transcript: {}", segments.join(" ")));

    heading(3, "A large array passed zero-copy");
    let img = Worker::spawn(spec("image-ops", "ImageOps"))?;
    let (height, width) = (8192usize, 8192usize);
    let len = height * width * 4;
    let mut buf = img.alloc(len)?;
    for (i, px) in buf.as_mut_slice().iter_mut().enumerate() {
        *px = (i % 251) as u8;
    }
    let data = Buffer::Shm(buf.freeze());
    let arr = Value::Array(Array {
        dtype: "|u1".into(),
        shape: vec![height as u64, width as u64, 4],
        data: data.clone(),
    });
    let timer = Instant::now();
    let mean = img.execute_blocking(vec![arr.clone()], vec![])?;
    let took = timer.elapsed();
    out(&format!(
        "   {} MiB uint8 image ({height}x{width}x4) -> worker: {} in {took:.1?}",
        len >> 20,
        mean.to_json()
    ));
    let timer = Instant::now();
    let inverted = img.execute_blocking(vec![arr], vec![("op".into(), Value::from("invert"))])?;
    let took = timer.elapsed();
    if let Value::Array(a) = &inverted {
        let ok = a
            .data
            .iter()
            .take(1 << 20)
            .zip(data.iter())
            .all(|(x, y)| *x == 255 - *y);
        out(&format!(
            "   inverted by the plugin into its own shared memory: {} MiB back in {took:.1?}, zero-copy: {}, correct: {ok}",
            a.data.len() >> 20,
            a.data.is_shared()
        ));
    }

    heading(4, "A cancellation");
    let flaky = Worker::spawn(spec("flaky", "Flaky"))?;
    let call = flaky.start("execute", vec![Value::from("slow")], vec![])?;
    // Give the call a moment to be running before cancelling it.
    let _ = flaky.worker_stats_blocking(Duration::from_secs(5))?;
    let timer = Instant::now();
    let phase = flaky.cancel_blocking(call.id(), CancelPolicy::default())?;
    let outcome = call.wait();
    let how = phase.map_or_else(
        || "after it had already finished".to_owned(),
        |p| p.to_string(),
    );
    out(&format!(
        "   the call was cancelled {how}, in {:.1?}",
        timer.elapsed()
    ));
    if let Err(e) = outcome {
        out(&format!("   the caller got: {e}"));
    }

    heading(5, "A crash the host survives");
    match flaky.execute_blocking(vec![Value::from("segfault")], vec![]) {
        Err(e @ WorkerError::Died { .. }) => {
            out(&format!("   {e}"));
            if let Some(hint) = e.hint() {
                out(&format!("   hint: {hint}"));
            }
        }
        other => out(&format!("   unexpected: {other:?}")),
    }
    flaky.restart_blocking()?;
    let again = flaky.execute_blocking(vec![Value::from("ok")], vec![])?;
    out(&format!(
        "   restarted as pid {}; next call -> {}",
        flaky.pid(),
        again.to_json()
    ));

    for worker in [&stats, &tr, &img, &flaky] {
        worker.stop_blocking();
    }
    out("\nAll workers stopped; nothing left running.");
    Ok(())
}
