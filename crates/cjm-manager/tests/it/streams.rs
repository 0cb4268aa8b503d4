//! Streamed calls through the manager, on real workers and the fake GPU: a
//! stream is admitted as a call is, its worker counts as running a call (and
//! is not evicted) until the stream ends, and a stream that does not fit waits
//! with its reason.

use std::time::Duration;

use cjm_manager::{LoadSpec, Manager, ManagerError, ManagerOptions};
use serde_json::json;

use crate::scheduling::{gpu_plugin, hold, load, on_fake_gpus};
use crate::support::{eventually, map};

#[test]
fn a_stream_holds_its_worker_until_it_ends_and_a_stream_that_does_not_fit_waits() {
    let (p, options) = on_fake_gpus("stream-admit", &[8192], Duration::ZERO);
    gpu_plugin(&p, "gpu-a", 6144);
    gpu_plugin(&p, "gpu-b", 4096);
    let m = Manager::new(
        p.config(),
        ManagerOptions {
            admission_timeout: Duration::from_millis(300),
            ..options
        },
    );
    let a = load(&m, "gpu-a", 6144);
    let b = m
        .load(
            &LoadSpec::new("gpu-b")
                .lazy()
                .config(map(json!({"vram_mb": 4096}))),
        )
        .unwrap();

    let mut held = m.execute_stream(&a, vec![], hold()).unwrap();
    let first = held.next_blocking().unwrap().unwrap().to_json();
    assert_eq!(first["chunk"], json!(0));
    eventually("gpu-a's stream to hold", || {
        p.hooks().iter().any(|l| l.ends_with("streaming"))
    });
    assert_eq!(
        m.info(&a).unwrap().in_flight,
        1,
        "the stream counts in flight"
    );

    // gpu-a streams, so it is not evicted: gpu-b's stream waits, and says why.
    let err = m.execute_stream(&b, vec![], vec![]).unwrap_err();
    assert!(matches!(err, ManagerError::Waited { .. }), "{err}");
    assert!(
        err.to_string().ends_with(
            "gpu-b waits for memory: it needs 4.0 GB of GPU memory on GPU 0 (Fake GPU) and \
             2.0 GB is free there; gpu-a (running a call, 6.0 GB) holds the rest; it starts \
             when a call of gpu-a finishes"
        ),
        "{err}"
    );
    assert!(
        m.worker(&a).is_some(),
        "gpu-a was not evicted under its stream"
    );

    fs_err::write(p.marker("release"), b"").unwrap();
    let rest: Vec<i64> = held
        .by_ref()
        .map(|c| c.unwrap().to_json()["chunk"].as_i64().unwrap())
        .collect();
    assert_eq!(rest, [1, 2]);
    assert_eq!(m.info(&a).unwrap().in_flight, 0, "counted out at its end");

    // Now gpu-a is idle: gpu-b's stream evicts it and runs.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let chunks = runtime.block_on(async {
        let mut stream = m
            .execute_stream_async(&b, vec![], vec![("n".into(), 2i64.into())])
            .await
            .unwrap();
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.next().await {
            chunks.push(chunk.unwrap().to_json()["chunk"].as_i64().unwrap());
        }
        chunks
    });
    assert_eq!(chunks, [0, 1]);
    assert!(
        m.worker(&a).is_none(),
        "gpu-a was evicted for gpu-b's stream"
    );
}

#[test]
fn a_stream_on_a_disabled_instance_is_refused_and_counts_nothing() {
    let (p, options) = on_fake_gpus("stream-disabled", &[8192], Duration::ZERO);
    gpu_plugin(&p, "gpu-a", 1024);
    let m = Manager::new(p.config(), options);
    let a = load(&m, "gpu-a", 1024);
    m.disable(&a).unwrap();
    let err = m.execute_stream(&a, vec![], vec![]).unwrap_err();
    assert!(err.to_string().contains("disabled"), "{err}");
    assert_eq!(m.info(&a).unwrap().in_flight, 0);
}
