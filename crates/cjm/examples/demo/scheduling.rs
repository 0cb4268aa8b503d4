//! Section 8 of the demo: three models on a scripted fake 8 GB GPU whose
//! footprints do not all fit. A call waits with its reason, an idle worker is
//! evicted, an out-of-memory is retried, and the last call runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cjm::manager::{LoadSpec, Manager, ManagerEvent, ManagerOptions};
use cjm::proto::Value;
use cjm::sched::Gpus;
use cjm::sched::gpu::{FakeDevice, FakeGpu};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{env_path, heading, out};

/// The three models and the GPU memory each holds once loaded, in MB.
const MODELS: [(&str, u64); 3] = [
    ("whisper-large", 5120),
    ("llm-7b", 4096),
    ("embedder", 2048),
];

fn write_manifests(data: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins");
    for (name, vram_mb) in MODELS {
        let mut m = cjm::manifest::Manifest::default();
        m.install.python_path = env_path("CJM_PYTHON").display().to_string();
        m.install.env_vars.insert(
            "PYTHONPATH".into(),
            serde_json::Value::String(plugins.display().to_string()),
        );
        m.code.name = name.into();
        m.code.version = "0.1.0".into();
        m.code.description = "a model on the fake GPU".into();
        m.code.module = "demo_plugins".into();
        m.code.class_name = "Model".into();
        m.code.interface = "cjm_worker.PluginInterface".into();
        m.code.config_schema = serde_json::json!({"type": "object", "properties": {
            "vram_mb": {"type": "integer", "default": vram_mb}}})
        .as_object()
        .cloned();
        // What the scheduler expects it to need: the reference's declared amount.
        m.code.resources = Some(cjm::core::ResourceRequirements {
            requires_gpu: true,
            extra: serde_json::json!({"min_gpu_vram_mb": vram_mb})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            ..Default::default()
        });
        m.write(data.join("manifests").join(format!("{name}.json")))?;
    }
    Ok(())
}

/// Prints what the scheduler reported since the last look.
fn report(events: &mut UnboundedReceiver<ManagerEvent>, said_wait: &mut bool) {
    while let Ok(e) = events.try_recv() {
        match e {
            ManagerEvent::Waiting { reason, .. } if !*said_wait => {
                *said_wait = true;
                out(&format!("   waits: {reason}"));
            }
            ManagerEvent::Evicted {
                instance_id,
                for_instance,
                ..
            } => out(&format!(
                "   evicted idle {instance_id} to make room for {for_instance}"
            )),
            ManagerEvent::OutOfMemory { error, .. } => {
                out(&format!("   out of memory: {error}"));
                out("   → evicting an idle worker, restarting this one, trying again");
            }
            _ => {}
        }
    }
}

/// Polls `cond` (a demo watching another thread, not a test) for up to 10 s.
fn until(what: &str, cond: impl Fn() -> bool) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        if std::time::Instant::now() > deadline {
            return Err(format!("gave up waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

fn gpu_line(manager: &Manager) -> String {
    let r = manager.refresh_resources();
    r.devices.first().map_or_else(String::new, |d| {
        let held: Vec<String> = r
            .instances
            .iter()
            .filter(|i| i.held.vram_bytes > 0)
            .map(|i| format!("{} {}", i.id, cjm::sched::amount::show(i.held.vram_bytes)))
            .collect();
        format!(
            "   GPU 0: {} free of {} ({})",
            cjm::sched::amount::show(d.free_bytes),
            cjm::sched::amount::show(d.total_bytes),
            if held.is_empty() {
                "nothing loaded".to_owned()
            } else {
                held.join(", ")
            }
        )
    })
}

pub(crate) fn on_a_fake_gpu() -> Result<(), Box<dyn std::error::Error>> {
    heading(
        8,
        "Scheduling on a fake 8 GB GPU: three models that do not all fit",
    );
    let root = std::env::temp_dir().join(format!("cjm-demo-sched-{}", std::process::id()));
    let _ = fs_err::remove_dir_all(&root);
    fs_err::create_dir_all(root.join("data/manifests"))?;
    write_manifests(&root.join("data"))?;
    // The fake driver gives an exited process's memory back 200 ms late.
    let fake = FakeGpu::create(
        &root.join("gpu"),
        &[FakeDevice::new("Fake GPU", 8192)],
        Duration::from_millis(200),
    )?;
    let options = cjm::core::LoadOptions {
        data_dir: Some(root.join("data")),
        ..Default::default()
    };
    let cfg = cjm::core::load_config(&options, &|_| None, &root)?;
    let manager = Manager::new(
        cfg,
        ManagerOptions {
            gpus: Some(Arc::new(Gpus::Fake(FakeGpu::new(root.join("gpu"))))),
            reap_interval: None,
            ..ManagerOptions::default()
        },
    );
    let mut events = manager.subscribe();
    for (name, mb) in MODELS {
        manager.load(&LoadSpec::new(name).lazy())?;
        let expected = manager
            .expected_footprint(name)
            .map_or_else(String::new, |e| e.to_string());
        out(&format!(
            "   {name}: holds {mb} MB once loaded; expected {expected}"
        ));
    }
    let ms = |n: i64| vec![("ms".to_owned(), Value::Int(n))];

    out("\n   whisper-large transcribes (a 600 ms call); llm-7b is called meanwhile:");
    let mut said = false;
    std::thread::scope(
        |s| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let whisper = s.spawn(|| manager.execute("whisper-large", vec![], ms(600)));
            // Let whisper's worker start and its call begin before llm asks.
            until("whisper-large's call to start", || {
                manager
                    .state("whisper-large")
                    .is_some_and(|st| st.as_str() == "busy")
            })?;
            let llm = s.spawn(|| manager.execute("llm-7b", vec![], ms(50)));
            until("llm-7b's call to wait or run", || {
                !manager.resources().waiting.is_empty() || llm.is_finished()
            })?;
            report(&mut events, &mut said);
            whisper.join().map_err(|_| "whisper's call panicked")??;
            out("   whisper-large's call finished; it is idle now");
            let got = llm.join().map_err(|_| "llm's call panicked")??;
            report(&mut events, &mut said);
            out(&format!("   llm-7b ran: {}", got.to_json()));
            Ok(())
        },
    )
    .map_err(|e| e.to_string())?;
    out(&gpu_line(&manager));

    out("\n   embedder is called, and its first allocation hits a (scripted) out-of-memory:");
    fake.script_oom(1)?;
    let got = manager.execute("embedder", vec![], ms(10))?;
    report(&mut events, &mut said);
    out(&format!(
        "   embedder ran on the second try: {}",
        got.to_json()
    ));
    out(&gpu_line(&manager));

    out("\n   whisper-large again, the last call:");
    let got = manager.execute("whisper-large", vec![], ms(10))?;
    report(&mut events, &mut said);
    out(&format!("   whisper-large ran: {}", got.to_json()));
    out(&gpu_line(&manager));

    out("\n   a model larger than the card is refused at once, nothing evicted:");
    let mut huge = cjm::manifest::Manifest::load(root.join("data/manifests/whisper-large.json"))?;
    huge.code.name = "giant-70b".into();
    if let Some(r) = huge.code.resources.as_mut() {
        r.extra.insert("min_gpu_vram_mb".into(), 40_960.into());
    }
    huge.write(root.join("data/manifests/giant-70b.json"))?;
    manager.rediscover();
    manager.load(&LoadSpec::new("giant-70b").lazy())?;
    if let Err(e) = manager.execute("giant-70b", vec![], ms(10)) {
        out(&format!("   {e}"));
    }
    manager.unload_all();
    drop(manager);
    let _ = fs_err::remove_dir_all(&root);
    Ok(())
}
