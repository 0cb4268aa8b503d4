use cjm_proto::Value;
use cjm_proxy::{Worker, WorkerSpec};

use crate::support::{Scratch, request, store, wheelhouse, worker_wheel};

#[test]
fn plugins_needing_different_versions_of_one_library_run_side_by_side() {
    let scratch = Scratch::new("side-by-side");
    let wh = wheelhouse(&scratch.0);
    let store = store(&scratch.0);
    let mut workers = Vec::new();
    for (name, module) in [("one", "demo_plugin_one"), ("two", "demo_plugin_two")] {
        let mut req = request(&wh, &[&format!("demo-plugin-{name}")]);
        req.wheels.push(worker_wheel());
        let env = store.ensure(&req).unwrap();
        let spec = WorkerSpec::new(format!("demo-plugin-{name}"), &env.python, module, "Plugin");
        workers.push(Worker::spawn(spec).unwrap());
    }
    let versions: Vec<Value> = workers
        .iter()
        .map(|w| {
            w.execute_blocking(vec![], vec![])
                .unwrap()
                .get("libdemo")
                .cloned()
                .unwrap()
        })
        .collect();
    assert_eq!(versions, vec![Value::from("1.0"), Value::from("2.0")]);
}
