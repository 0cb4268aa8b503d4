//! Admission, placement, waits and refusals: one situation per test, with the
//! words a person reads.

use cjm_sched::Decision;
use cjm_sched::fit::Activity;

use crate::support::{
    admitted_device, idle, loaded, never_words, request, scheduler, view, wait_words,
};

#[test]
fn a_call_that_fits_starts_on_the_gpu_with_the_most_free_memory() {
    let (s, _) = scheduler();
    let v = view(8000, &[(8192, 2000), (8192, 6000)], vec![]);
    let d = s.decide(&request("a", (500, 3000)), &v);
    assert_eq!(admitted_device(&d), Some(1));
}

#[test]
fn a_cpu_call_needs_no_gpu_and_gets_none() {
    let (s, _) = scheduler();
    let d = s.decide(&request("a", (500, 0)), &view(8000, &[], vec![]));
    assert_eq!(admitted_device(&d), None);
}

#[test]
fn two_calls_admitted_at_once_never_share_the_same_free_memory() {
    let (s, _) = scheduler();
    let v = view(8000, &[(8192, 8192)], vec![]);
    let first = s.decide(&request("a", (100, 6144)), &v);
    assert_eq!(admitted_device(&first), Some(0));
    let second = s.decide(&request("b", (100, 6144)), &v);
    assert_eq!(
        wait_words(&second),
        "b waits for memory: it needs 6.0 GB of GPU memory on GPU 0 (Fake GPU 0) and 2.0 GB \
         is free there; a (starting, 6.0 GB) holds the rest; it starts when a call of a finishes"
    );
    drop(first);
    assert_eq!(
        admitted_device(&s.decide(&request("b", (100, 6144)), &v)),
        Some(0)
    );
}

#[test]
fn what_an_instance_already_holds_counts_towards_what_it_needs() {
    let (s, _) = scheduler();
    let v = view(600, &[], vec![idle("a", 1, (1000, 0), None)]);
    let d = s.decide(&request("a", (1500, 0)), &v);
    assert_eq!(admitted_device(&d), None);
    assert_eq!(s.reservations().len(), 1);
    drop(d);
    assert!(s.reservations().is_empty());
}

#[test]
fn a_loaded_instance_stays_on_its_gpu() {
    let (s, _) = scheduler();
    let v = view(
        8000,
        &[(8192, 8192), (8192, 2000)],
        vec![idle("a", 1, (100, 1000), Some(1))],
    );
    assert_eq!(
        admitted_device(&s.decide(&request("a", (100, 2000)), &v)),
        Some(1)
    );
}

#[test]
fn a_call_held_back_by_a_busy_worker_says_what_it_waits_for() {
    let (s, _) = scheduler();
    let v = view(
        8000,
        &[(8192, 1024)],
        vec![loaded("a", Activity::Busy, 1, (100, 6144), Some(0))],
    );
    assert_eq!(
        wait_words(&s.decide(&request("b", (100, 4096)), &v)),
        "b waits for memory: it needs 4.0 GB of GPU memory on GPU 0 (Fake GPU 0) and 1.0 GB is \
         free there; a (running a call, 6.0 GB) holds the rest; it starts when a call of a finishes"
    );
}

#[test]
fn short_of_ram_names_ram() {
    let (s, _) = scheduler();
    let v = view(
        1024,
        &[],
        vec![loaded("a", Activity::Busy, 1, (2048, 0), None)],
    );
    assert_eq!(
        wait_words(&s.decide(&request("b", (1536, 0)), &v)),
        "b waits for memory: it needs 1.5 GB of RAM and 1.0 GB is free; a (running a call, \
         2.0 GB) holds the rest; it starts when a call of a finishes"
    );
}

#[test]
fn a_call_that_could_never_fit_on_the_gpu_fails_at_once_and_evicts_nothing() {
    let (s, _) = scheduler();
    let v = view(
        8000,
        &[(8192, 1024)],
        vec![idle("a", 1, (100, 4096), Some(0))],
    );
    let d = s.decide(&request("big", (100, 12288)), &v);
    assert_eq!(
        never_words(&d),
        "big can never run here: it needs 12.0 GB of GPU memory and the most any GPU could give \
         is 5.0 GB (GPU 0, Fake GPU 0, 8.0 GB in all); lower its footprint \
         (resources.min_gpu_vram_mb, or a smaller model in its config) or use a larger GPU"
    );
    assert!(s.evictions().is_empty(), "nothing was evicted for it");
}

#[test]
fn a_call_that_could_never_fit_in_ram_names_the_numbers() {
    let (s, _) = scheduler();
    let v = view(2048, &[], vec![idle("a", 1, (1024, 0), None)]);
    assert_eq!(
        never_words(&s.decide(&request("big", (8192, 0)), &v)),
        "big can never run here: it needs 8.0 GB of RAM and this machine could give at most \
         3.0 GB (2.0 GB free now and 1.0 GB its other workers hold); lower its footprint \
         (resources.min_system_ram_mb, or its config) or free memory outside cjm"
    );
    assert!(s.evictions().is_empty());
}

#[test]
fn a_gpu_plugin_on_a_machine_without_gpus_is_refused_with_the_reason() {
    let (s, _) = scheduler();
    assert_eq!(
        never_words(&s.decide(&request("g", (100, 1024)), &view(8000, &[], vec![]))),
        "g can never run here: it needs a GPU and there is none (no NVIDIA driver); run it on a \
         machine with a GPU"
    );
}

#[test]
fn the_concurrency_cap_holds_a_call_until_one_of_its_own_finishes() {
    let (s, _) = scheduler();
    let v = view(8000, &[], vec![]);
    let mut capped = request("a", (100, 0));
    capped.max_concurrent = Some(1);
    let first = s.decide(&capped, &v);
    assert_eq!(admitted_device(&first), None);
    let second = s.decide(&capped, &v);
    assert_eq!(
        wait_words(&second),
        "a waits for a free slot: it runs 1 call already, its limit (max_concurrent_requests 1); \
         it starts when one of them finishes"
    );
    let Decision::Wait(_, ticket) = second else {
        unreachable!()
    };
    assert!(
        !s.wait_for_change(ticket, std::time::Duration::ZERO),
        "nothing changed yet"
    );
    drop(first);
    assert!(
        s.wait_for_change(ticket, std::time::Duration::ZERO),
        "the release is a change"
    );
    assert_eq!(admitted_device(&s.decide(&capped, &v)), None);
}

#[test]
fn at_the_worker_limit_an_idle_worker_makes_room_and_a_busy_one_does_not() {
    let (s, _) = scheduler();
    let mut v = view(
        8000,
        &[],
        vec![
            loaded("a", Activity::Busy, 1, (100, 0), None),
            loaded("b", Activity::Busy, 2, (100, 0), None),
        ],
    );
    v.max_workers = Some(2);
    assert_eq!(
        wait_words(&s.decide(&request("c", (100, 0)), &v)),
        "c waits for a worker: 2 are loaded, the most allowed (max_workers), and none is idle; it \
         starts when one can be evicted"
    );
    v.loaded[1].activity = Activity::Idle;
    match s.decide(&request("c", (100, 0)), &v) {
        Decision::Evict(victims) => assert_eq!(victims, ["b"]),
        other => panic!("expected an eviction, got {other:?}"),
    }
}
