use std::sync::Arc;

use cjm_env::{EnvError, EnvKey};

use crate::support::{Scratch, python, request, run_python, store, wheelhouse};

#[test]
fn conflicting_requirements_get_separate_environments() {
    let scratch = Scratch::new("conflict");
    let wh = wheelhouse(&scratch.0);
    let store = store(&scratch.0);
    let one = store.ensure(&request(&wh, &["demo-plugin-one"])).unwrap();
    let two = store.ensure(&request(&wh, &["demo-plugin-two"])).unwrap();
    assert_ne!(one.key, two.key);
    assert_eq!(
        run_python(&one.python, "import demo_plugin_one as p; print(p.LIBDEMO)"),
        "1.0"
    );
    assert_eq!(
        run_python(&two.python, "import demo_plugin_two as p; print(p.LIBDEMO)"),
        "2.0"
    );
    assert!(one.lock.contains("libdemo==1.0"), "{}", one.lock);
    assert!(two.lock.contains("libdemo==2.0"), "{}", two.lock);
    // Neither touched the interpreter it was built from.
    let base = run_python(
        &python(),
        "import importlib.util as u; print(u.find_spec('libdemo') is None)",
    );
    assert_eq!(base, "True");
}

#[test]
fn identical_requirement_sets_share_one_environment() {
    let scratch = Scratch::new("share");
    let wh = wheelhouse(&scratch.0);
    let store = store(&scratch.0);
    let first = store
        .ensure(&request(&wh, &["libdemo==1.0", "demo-plugin-one"]))
        .unwrap();
    let again = store
        .ensure(&request(
            &wh,
            &["demo-plugin-one", "libdemo==1.0", "demo-plugin-one"],
        ))
        .unwrap();
    assert!(first.built && !again.built);
    assert_eq!(first.key, again.key);
    assert_eq!(store.list().unwrap(), vec![first.key]);
}

#[test]
fn concurrent_requests_for_one_key_build_it_once() {
    let scratch = Scratch::new("concurrent");
    let wh = wheelhouse(&scratch.0);
    let store = Arc::new(store(&scratch.0));
    let req = Arc::new(request(&wh, &["demo-plugin-two"]));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (store, req) = (Arc::clone(&store), Arc::clone(&req));
            std::thread::spawn(move || store.ensure(&req).unwrap())
        })
        .collect();
    let envs: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        envs.iter().filter(|e| e.built).count(),
        1,
        "exactly one build"
    );
    assert!(envs.windows(2).all(|w| w[0].dir == w[1].dir));
}

#[test]
fn a_requirement_that_cannot_be_met_leaves_nothing_behind() {
    let scratch = Scratch::new("broken");
    let wh = wheelhouse(&scratch.0);
    let store = store(&scratch.0);
    let req = request(&wh, &["libdemo==9.9"]);
    let err = store.ensure(&req).unwrap_err();
    let EnvError::Tool {
        step, output_tail, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*step, "installing the requirements");
    assert!(output_tail.iter().any(|l| l.contains("libdemo")), "{err}");
    assert!(err.hint().is_some());
    assert!(store.list().unwrap().is_empty());
    let leftovers: Vec<_> = fs_err::read_dir(scratch.0.join("envs"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(leftovers.is_empty(), "no half-built folder: {leftovers:?}");
}

#[test]
fn repair_rebuilds_and_gc_removes_unused_environments() {
    let scratch = Scratch::new("gc");
    let wh = wheelhouse(&scratch.0);
    let store = store(&scratch.0);
    let one = store.ensure(&request(&wh, &["demo-plugin-one"])).unwrap();
    let two = store.ensure(&request(&wh, &["demo-plugin-two"])).unwrap();
    let repaired = store.repair(&request(&wh, &["demo-plugin-one"])).unwrap();
    assert!(repaired.built && repaired.key == one.key);
    let removed = store.gc(std::slice::from_ref(&one.key)).unwrap();
    assert_eq!(removed, vec![two.key]);
    assert_eq!(store.list().unwrap(), vec![one.key]);
}

#[test]
fn the_key_changes_with_everything_that_changes_the_install() {
    let wh = std::path::Path::new("/wheels");
    let base = request(wh, &["a==1"]);
    let key = |r: &cjm_env::EnvRequest| EnvKey::of(r, "1");
    let mut other_python = base.clone();
    other_python.python = "3.12".into();
    let mut other_req = base.clone();
    other_req.requirements.push("b".into());
    let mut other_index = base.clone();
    other_index.index_url = Some("https://example.invalid/simple".into());
    let mut other_wheel = base.clone();
    other_wheel
        .wheels
        .push("cjm_worker-0.2.0-cp39-abi3-linux_x86_64.whl".into());
    for changed in [&other_python, &other_req, &other_index, &other_wheel] {
        assert_ne!(key(&base), key(changed), "{changed:?}");
    }
    assert_ne!(
        key(&base),
        EnvKey::of(&base, "2"),
        "a new worker version gets new environments"
    );
}

/// Keys name environments on disk, so a change to how a request is hashed rebuilds
/// every environment. These are the keys of fixed requests, one per backend.
#[test]
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn the_keys_of_fixed_requests_stay_the_same() {
    let mut req = cjm_env::EnvRequest::uv("3.11", ["libdemo==1.0", "demo-plugin-one"]);
    let mut keys = Vec::new();
    for backend in [
        cjm_manifest::Backend::Uv,
        cjm_manifest::Backend::Conda,
        cjm_manifest::Backend::Python,
    ] {
        req.backend = backend;
        keys.push(EnvKey::of(&req, "0.1.0").0);
    }
    assert_eq!(
        keys,
        ["95c5efd7cfa5300b", "89486eebb09d8e32", "0cec11ab1155bb1b"]
    );
}

#[test]
fn an_existing_interpreter_is_used_as_it_is() {
    let scratch = Scratch::new("existing");
    let store = store(&scratch.0);
    let mut req = cjm_env::EnvRequest::uv(python().to_string_lossy(), Vec::<String>::new());
    req.backend = cjm_manifest::Backend::Python;
    let env = store.ensure(&req).unwrap();
    assert_eq!(env.python, python());
    assert!(!env.built);
    assert!(env.lock.contains("pytest=="), "{}", env.lock);
    assert!(store.list().unwrap().is_empty(), "nothing was built");
}
