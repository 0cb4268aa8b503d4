//! Which idle workers are evicted, and how the next admission waits for their
//! memory to come back.

use std::time::Duration;

use cjm_sched::Decision;
use cjm_sched::fit::{Activity, View, WaitFor};

use crate::support::{idle, loaded, request, scheduler, victims, view, wait_words};

#[test]
fn of_the_idle_workers_whose_release_is_enough_the_least_recently_used_goes() {
    let (s, _) = scheduler();
    let v = view(
        8000,
        &[(8192, 1024)],
        vec![
            idle("x", 10, (100, 3072), Some(0)),
            idle("y", 5, (100, 4096), Some(0)),
        ],
    );
    assert_eq!(victims(s.decide(&request("z", (100, 3072)), &v)), ["y"]);
}

#[test]
fn one_worker_that_is_enough_goes_before_older_ones_that_are_not() {
    let (s, _) = scheduler();
    let v = view(
        8000,
        &[(8192, 0)],
        vec![
            idle("x", 1, (100, 1024), Some(0)),
            idle("y", 2, (100, 1024), Some(0)),
            idle("w", 9, (100, 4096), Some(0)),
        ],
    );
    assert_eq!(victims(s.decide(&request("z", (100, 3000)), &v)), ["w"]);
}

#[test]
fn equally_old_workers_go_cheapest_reload_first() {
    let (s, _) = scheduler();
    let mut v = view(
        8000,
        &[(8192, 0)],
        vec![
            idle("x", 1, (100, 4096), Some(0)),
            idle("y", 1, (100, 4096), Some(0)),
        ],
    );
    v.loaded[0].reload_ms = 900.0;
    v.loaded[1].reload_ms = 40.0;
    assert_eq!(victims(s.decide(&request("z", (100, 3000)), &v)), ["y"]);
}

#[test]
fn when_no_one_worker_is_enough_the_least_recently_used_go_until_there_is_room() {
    let (s, _) = scheduler();
    let v = view(
        8000,
        &[(8192, 0)],
        vec![
            idle("w", 3, (100, 512), Some(0)),
            idle("x", 1, (100, 2048), Some(0)),
            idle("y", 2, (100, 2048), Some(0)),
        ],
    );
    assert_eq!(
        victims(s.decide(&request("z", (100, 3500)), &v)),
        ["x", "y"]
    );
}

#[test]
fn only_workers_on_the_gpu_that_is_short_are_evicted_for_gpu_memory() {
    let (s, _) = scheduler();
    let v = view(
        8000,
        &[(8192, 0), (8192, 0)],
        vec![
            idle("a", 9, (100, 8192), Some(0)),
            loaded("b", Activity::Busy, 1, (100, 8192), Some(1)),
            idle("c", 1, (4000, 0), None),
        ],
    );
    assert_eq!(victims(s.decide(&request("z", (100, 4096)), &v)), ["a"]);
}

#[test]
fn after_an_eviction_the_next_admission_waits_until_the_memory_has_come_back() {
    let (s, _) = scheduler();
    let mut v = view(
        8000,
        &[(8192, 1024)],
        vec![idle("x", 1, (0, 6144), Some(0))],
    );
    let z = request("z", (100, 4096));
    assert_eq!(victims(s.decide(&z, &v)), ["x"]);
    assert_eq!(s.evictions(), ["x"]);

    // Still stopping: nothing is back, and nothing more is evicted.
    v.loaded[0].activity = Activity::Stopping;
    assert_eq!(
        wait_words(&s.decide(&z, &v)),
        "z waits for memory: it needs 4.0 GB of GPU memory on GPU 0 (Fake GPU 0) and 1.0 GB is \
         free there; it starts when the memory freed by evicting x comes back (0 MB of 6.0 GB back \
         so far)"
    );

    // Stopped, and the driver gives the memory back slowly.
    s.evicted("x", true);
    v.loaded.clear();
    v.devices[0].free_bytes = 3072 << 20;
    assert_eq!(
        wait_words(&s.decide(&z, &v)),
        "z waits for memory: it needs 4.0 GB of GPU memory on GPU 0 (Fake GPU 0) and 3.0 GB is \
         free there; it starts when the memory freed by evicting x comes back (2.0 GB of 6.0 GB \
         back so far)"
    );

    v.devices[0].free_bytes = 7168 << 20;
    let Decision::Admit(permit) = s.decide(&z, &v) else {
        panic!("the memory is back")
    };
    assert_eq!(permit.device(), Some(0));
    assert!(s.evictions().is_empty());
}

#[test]
fn memory_that_never_comes_back_is_waited_for_only_up_to_a_bound() {
    let (s, clock) = scheduler();
    let mut v = view(
        8000,
        &[(8192, 1024)],
        vec![idle("x", 1, (0, 6144), Some(0))],
    );
    let z = request("z", (100, 4096));
    assert_eq!(victims(s.decide(&z, &v)), ["x"]);
    s.evicted("x", true);
    v.loaded.clear();
    v.devices[0].free_bytes = 3072 << 20;
    let Decision::Wait(w, _) = s.decide(&z, &v) else {
        panic!("waits")
    };
    assert!(matches!(w.waits_for, WaitFor::Memory { .. }));

    // Past the bound the memory counts as held outside cjm: the call can never
    // run, and says so with the numbers.
    clock.advance(cjm_sched::fit::DEFAULT_RETURN_TIMEOUT + Duration::from_millis(1));
    let Decision::Never(never) = s.decide(&z, &v) else {
        panic!("refused")
    };
    assert!(never.to_string().starts_with("z can never run here: it needs 4.0 GB of GPU memory and the most any GPU could give is 3.0 GB"), "{never}");
    assert!(s.evictions().is_empty());
}

#[test]
fn a_call_for_an_instance_being_evicted_waits_for_the_eviction_then_loads_it_again() {
    let (s, _) = scheduler();
    let mut v = view(
        8000,
        &[(8192, 1024)],
        vec![idle("x", 1, (0, 6144), Some(0))],
    );
    assert_eq!(victims(s.decide(&request("z", (100, 4096)), &v)), ["x"]);
    let x = request("x", (100, 6144));
    assert_eq!(
        wait_words(&s.decide(&x, &v)),
        "x waits: it is being evicted, and loads again when that finishes"
    );
    s.evicted("x", true);
    v.loaded.clear();
    v.devices[0].free_bytes = 7168 << 20;
    assert!(matches!(s.decide(&x, &v), Decision::Admit(_)));
}

#[test]
fn an_eviction_that_failed_is_forgotten_and_the_worker_may_be_chosen_again() {
    let (s, _) = scheduler();
    let v = view(
        8000,
        &[(8192, 1024)],
        vec![idle("x", 1, (0, 6144), Some(0))],
    );
    let z = request("z", (100, 4096));
    assert_eq!(victims(s.decide(&z, &v)), ["x"]);
    s.evicted("x", false);
    assert!(s.evictions().is_empty());
    assert_eq!(victims(s.decide(&z, &v)), ["x"]);
}

#[test]
fn two_callers_short_at_once_do_not_evict_the_same_worker_twice() {
    let (s, _) = scheduler();
    let v = view(
        8000,
        &[(8192, 1024)],
        vec![
            idle("x", 1, (0, 6144), Some(0)),
            idle("y", 2, (100, 1024), Some(0)),
        ],
    );
    assert_eq!(victims(s.decide(&request("z1", (100, 4096)), &v)), ["x"]);
    let Decision::Wait(w, _) = s.decide(&request("z2", (100, 4096)), &v) else {
        panic!("the second waits for what the first eviction frees")
    };
    assert!(matches!(w.waits_for, WaitFor::Memory { .. }));
}

#[test]
fn a_call_is_admitted_from_its_own_view_only_when_that_alone_shows_it_fits() {
    let (s, _) = scheduler();
    let whole = view(
        8000,
        &[(8192, 1024)],
        vec![
            idle("x", 1, (0, 6144), Some(0)),
            idle("y", 2, (100, 10), None),
        ],
    );
    let own = |v: &cjm_sched::fit::View, id: &str| cjm_sched::fit::View {
        loaded: v
            .loaded
            .iter()
            .filter(|l| l.instance == id)
            .cloned()
            .collect(),
        ..v.clone()
    };
    let permit = s
        .admit_from_own_view(&request("y", (200, 0)), &own(&whole, "y"))
        .expect("100 MB more fits in 8000 MB");
    assert_eq!(
        s.running("y"),
        1,
        "it counts as running, so it is not evicted"
    );
    drop(permit);
    assert!(
        s.admit_from_own_view(&request("y", (9000, 0)), &own(&whole, "y"))
            .is_none(),
        "does not fit: the whole view decides (and may evict)"
    );
    assert!(
        s.admit_from_own_view(&request("z", (10, 0)), &own(&whole, "z"))
            .is_none(),
        "z has no worker: the whole view decides (a worker slot, a device)"
    );
    assert_eq!(victims(s.decide(&request("z", (100, 4096)), &whole)), ["x"]);
    assert!(
        s.admit_from_own_view(&request("y", (200, 0)), &own(&whole, "y"))
            .is_none(),
        "an eviction is pending: only the whole view settles it"
    );
    s.evicted("x", true);
}

/// From its own view, a call is never admitted into memory another call has
/// reserved (the others count as holding none of it), and another device's
/// reservation does not count against its own.
#[test]
fn from_its_own_view_a_call_never_takes_what_another_call_reserved() {
    let (s, _) = scheduler();
    let whole = view(
        8000,
        &[(8192, 8192), (8192, 8192)],
        vec![
            idle("x", 1, (0, 0), Some(0)),
            idle("y", 2, (100, 100), Some(0)),
            idle("w", 3, (100, 100), Some(1)),
        ],
    );
    let own = |id: &str| View {
        loaded: whole
            .loaded
            .iter()
            .filter(|l| l.instance == id)
            .cloned()
            .collect(),
        ..whole.clone()
    };
    // x reserves 6000 MB of RAM and 6000 MB on GPU 0, none of it held yet.
    let Decision::Admit(x) = s.decide(&request("x", (6000, 6000)), &whole) else {
        panic!("x fits the whole machine")
    };
    assert_eq!(x.device(), Some(0));
    assert!(
        s.admit_from_own_view(&request("y", (3100, 0)), &own("y"))
            .is_none(),
        "3000 MB more for y does not fit beside x's 6000 of 8000"
    );
    assert!(
        s.admit_from_own_view(&request("y", (100, 3000)), &own("y"))
            .is_none(),
        "2900 MB more on GPU 0 does not fit beside x's 6000 of 8192"
    );
    let w = s
        .admit_from_own_view(&request("w", (1000, 3000)), &own("w"))
        .expect("GPU 1 is free of x's reservation, and 900 MB of RAM fits");
    assert_eq!(w.device(), Some(1));
    drop((x, w));
}
