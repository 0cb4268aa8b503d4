//! Eight threads calling six GPU instances that do not all fit, for a bounded
//! number of calls: every call completes or waits with a reason, evicted
//! instances come back, and the simulated GPU is never over-committed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cjm_core::{Clock, SharedClock, SystemClock};
use cjm_sched::fit::{Activity, Device, Loaded, View};
use cjm_sched::{Decision, FitOptions, Footprint, Scheduler};

use crate::support::request;

const TOTAL_MB: u64 = 8192;
const NEEDS_MB: u64 = 3000;

#[derive(Default)]
struct Machine {
    /// Loaded instances: busy calls and when last used.
    loaded: HashMap<String, (usize, Duration)>,
}

fn view(m: &Machine, clock: &dyn Clock) -> View {
    let sampled_at = clock.now();
    let held = m.loaded.len() as u64 * NEEDS_MB;
    assert!(
        held <= TOTAL_MB,
        "over-committed: {held} MB on a {TOTAL_MB} MB GPU"
    );
    View {
        ram_free_bytes: 64 << 30,
        ram_capacity_bytes: 64 << 30,
        devices: vec![Device {
            index: 0,
            name: "Fake GPU".into(),
            total_bytes: TOTAL_MB << 20,
            free_bytes: (TOTAL_MB - held) << 20,
        }],
        no_gpu_reason: None,
        loaded: m
            .loaded
            .iter()
            .map(|(id, &(busy, used))| Loaded {
                instance: id.clone(),
                plugin: id.clone(),
                activity: if busy > 0 {
                    Activity::Busy
                } else {
                    Activity::Idle
                },
                last_used: used,
                held: Footprint::mb(0, NEEDS_MB),
                device: Some(0),
                reload_ms: 10.0,
            })
            .collect(),
        max_workers: None,
        sampled_at,
    }
}

#[test]
fn eight_threads_on_instances_that_do_not_all_fit_neither_deadlock_nor_livelock() {
    let clock: SharedClock = SystemClock::shared();
    let sched = Scheduler::new(Arc::clone(&clock), FitOptions::default());
    let machine = Arc::new(Mutex::new(Machine::default()));
    let deadline = Instant::now() + Duration::from_mins(1);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (sched, machine, clock) = (sched.clone(), Arc::clone(&machine), Arc::clone(&clock));
            std::thread::spawn(move || {
                let (mut done, mut waits, mut evictions) = (0, 0, 0);
                for call in 0..150 {
                    let id = format!("i{}", (t + call) % 6);
                    let req = request(&id, (0, NEEDS_MB));
                    loop {
                        assert!(Instant::now() < deadline, "{id} made no progress: livelock");
                        // As the manager does: the instance list is current when the
                        // decision is taken, and an admission registers the worker
                        // before anyone else decides.
                        let decision = {
                            let mut m = machine.lock().unwrap();
                            let d = sched.decide(&req, &view(&m, clock.as_ref()));
                            if let Decision::Admit(_) = &d {
                                m.loaded.entry(id.clone()).or_insert((0, clock.now())).0 += 1;
                            }
                            d
                        };
                        match decision {
                            Decision::Admit(permit) => {
                                std::thread::yield_now();
                                {
                                    let mut m = machine.lock().unwrap();
                                    let e = m.loaded.get_mut(&id).expect("loaded while running");
                                    e.0 -= 1;
                                    e.1 = clock.now();
                                }
                                drop(permit);
                                done += 1;
                                break;
                            }
                            Decision::Evict(victims) => {
                                evictions += victims.len();
                                for v in victims {
                                    let mut m = machine.lock().unwrap();
                                    let busy = m.loaded.get(&v).is_some_and(|e| e.0 > 0);
                                    assert!(!busy, "{v} was chosen while busy");
                                    m.loaded.remove(&v);
                                    drop(m);
                                    sched.evicted(&v, true);
                                }
                            }
                            Decision::Wait(reason, ticket) => {
                                assert!(!reason.to_string().is_empty());
                                waits += 1;
                                sched.wait_for_change(ticket, Duration::from_millis(5));
                            }
                            Decision::Never(n) => panic!("{n}"),
                        }
                    }
                }
                (done, waits, evictions)
            })
        })
        .collect();
    let (mut total, mut waited, mut evicted) = (0, 0, 0);
    for t in threads {
        let (done, waits, evictions) = t.join().expect("no thread panicked");
        total += done;
        waited += waits;
        evicted += evictions;
    }
    assert_eq!(total, 8 * 150, "every call completed");
    assert!(
        evicted > 0,
        "six instances of 3000 MB on 8192 MB: some were evicted"
    );
    assert!(waited > 0, "and some calls waited");
    assert!(sched.reservations().is_empty());
}
