//! The `fit` policy: a call starts when what its instance is expected to need
//! fits what is free, counting what calls already admitted have reserved and not
//! yet used, so that two calls admitted at once never share the same free memory.
//!
//! When it does not fit, idle workers are evicted (least recently used first,
//! preferring one whose release alone is enough, then the cheaper reload), and
//! the next decision waits until the memory they held has actually come back,
//! measured, within a bound. When nothing idle would make room, the call waits
//! with a [`Wait`] that says what it needs, what is free, what holds the rest and
//! what it waits for. A call that could never fit (more than the free memory and
//! everything cjm's workers hold together) is refused at once with a [`Never`],
//! and nothing is evicted for it.
//!
//! The scheduler decides; it never starts, stops or samples anything. The
//! manager builds a [`View`] from its monitors, asks [`Scheduler::decide`], and
//! carries out what it is told: it evicts the named instances (then reports
//! [`Scheduler::evicted`]), waits ([`Scheduler::wait_for_change`]) or runs the
//! call while it holds the [`Permit`].

mod choose;
pub mod reason;
pub mod view;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use cjm_core::SharedClock;

use crate::footprint::Footprint;
use crate::lock;
pub use reason::{Holder, Never, Short, Wait, WaitFor};
pub use view::{Activity, Device, Loaded, Request, View};

/// How long, by default, memory freed by an eviction may take to come back
/// before the scheduler stops waiting for it.
pub const DEFAULT_RETURN_TIMEOUT: Duration = Duration::from_secs(10);

/// The `fit` policy's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    /// The longest to wait for an evicted worker's memory to show as free again.
    pub return_timeout: Duration,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            return_timeout: DEFAULT_RETURN_TIMEOUT,
        }
    }
}

/// What a call should do now.
#[derive(Debug)]
pub enum Decision {
    /// Run: the permit holds the call's reservation until it is dropped.
    Admit(Permit),
    /// Stop these idle instances (already marked as being evicted), report each
    /// with [`Scheduler::evicted`], then ask again.
    Evict(Vec<String>),
    /// Wait ([`Scheduler::wait_for_change`] with the ticket), then ask again.
    Wait(Wait, Ticket),
    /// Fail the call: it can never run here.
    Never(Never),
}

/// The scheduler's state at a decision, to wait for a change from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// A running call's reservation, released when dropped.
#[derive(Debug)]
pub struct Permit {
    inner: Arc<Inner>,
    id: u64,
    device: Option<u32>,
}

impl Permit {
    /// The GPU the call runs on (its worker's, or the one a new worker should be
    /// pinned to), if it needs one.
    pub fn device(&self) -> Option<u32> {
        self.device
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let released_at = self.inner.clock.now();
        let mut ledger = lock(&self.inner.ledger);
        if let Some(claim) = ledger
            .claims
            .remove(&self.id)
            .filter(|c| c.needs != Footprint::default())
        {
            // Until a sample taken after now shows what the worker holds, the
            // claim keeps counting: a stale view must not hand it out twice.
            // One entry per instance, however many calls ended since the last
            // sample, so that a decision's cost does not grow with the call rate.
            match ledger
                .settling
                .iter_mut()
                .find(|(c, _)| c.instance == claim.instance)
            {
                Some((settling, at)) => {
                    settling.needs = settling.needs.max(claim.needs);
                    settling.device = settling.device.or(claim.device);
                    *at = released_at;
                }
                None => ledger.settling.push((claim, released_at)),
            }
        }
        self.inner.announce(ledger);
    }
}

/// A call's reservation: the whole footprint its instance may grow to.
#[derive(Debug, Clone)]
struct Claim {
    instance: String,
    needs: Footprint,
    device: Option<u32>,
}

/// An eviction whose memory has not come back yet.
#[derive(Debug, Clone)]
struct Eviction {
    instance: String,
    held: Footprint,
    device: Option<u32>,
    since: Duration,
    vram_free_before: u64,
}

/// What a call reserved and is running, as `cjm-ctl resources` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The instance.
    pub instance: String,
    /// What it may grow to.
    pub needs: Footprint,
    /// Its GPU.
    pub device: Option<u32>,
}

#[derive(Debug, Default)]
struct Ledger {
    next_id: u64,
    generation: u64,
    claims: HashMap<u64, Claim>,
    /// Released claims, with when, not yet covered by a sample taken after.
    settling: Vec<(Claim, Duration)>,
    evictions: Vec<Eviction>,
    /// Callers in [`Scheduler::wait_for_change`]: a change wakes them only when
    /// there are some, since a wake-up is a system call even with no one waiting.
    waiters: usize,
}

impl Ledger {
    fn changed(&mut self) {
        self.generation += 1;
    }

    fn running(&self, instance: &str) -> usize {
        self.claims
            .values()
            .filter(|c| c.instance == instance)
            .count()
    }
}

#[derive(Debug)]
struct Inner {
    clock: SharedClock,
    options: FitOptions,
    ledger: Mutex<Ledger>,
    changed: Condvar,
}

impl Inner {
    /// Records a change in `ledger` and wakes whoever waits for one.
    fn announce(&self, mut ledger: MutexGuard<'_, Ledger>) {
        ledger.changed();
        let waiting = ledger.waiters > 0;
        drop(ledger);
        if waiting {
            self.changed.notify_all();
        }
    }
}

/// The `fit` scheduler: one per manager, shared by every caller.
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    /// A scheduler on `clock` (for eviction bounds) with these options.
    pub fn new(clock: SharedClock, options: FitOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock,
                options,
                ledger: Mutex::new(Ledger::default()),
                changed: Condvar::new(),
            }),
        }
    }

    /// Decides what the call in `request` does now, given `view`. An admission
    /// reserves at once, under the same lock as the decision, so two callers
    /// never admit into the same free memory.
    pub fn decide(&self, request: &Request, view: &View) -> Decision {
        let mut ledger = lock(&self.inner.ledger);
        let now = self.inner.clock.now();
        self.settle(&mut ledger, view, now);
        let ticket = Ticket(ledger.generation);
        match choose::choose(&ledger, request, view) {
            choose::Outcome::Admit(device) => {
                Decision::Admit(self.claim(&mut ledger, request, device))
            }
            choose::Outcome::Evict(victims) => {
                for victim in &victims {
                    let Some(l) = view.loaded(victim) else {
                        continue;
                    };
                    ledger.evictions.push(Eviction {
                        instance: victim.clone(),
                        held: l.held,
                        device: l.device,
                        since: now,
                        vram_free_before: l
                            .device
                            .and_then(|d| view.device(d))
                            .map_or(0, |d| d.free_bytes),
                    });
                }
                ledger.changed();
                Decision::Evict(victims)
            }
            choose::Outcome::Wait(wait) => Decision::Wait(wait, ticket),
            choose::Outcome::Never(never) => Decision::Never(never),
        }
    }

    /// Admits a call on an instance whose worker runs, from a view that lists
    /// only that instance, when that alone shows the call fits; `None`: ask
    /// [`decide`](Self::decide) with the whole view. The manager's hot path: it
    /// spares building the whole view for the common call.
    ///
    /// It is sound because what such a view leaves out only ever makes room:
    /// another instance with a reservation counts as holding nothing of it (so
    /// its whole reservation counts as outstanding), and the instance itself
    /// needs no worker slot. It declines while any eviction is pending, whose
    /// settling needs the whole view; and it changes nothing unless it admits.
    pub fn admit_from_own_view(&self, request: &Request, view: &View) -> Option<Permit> {
        let mut ledger = lock(&self.inner.ledger);
        if !ledger.evictions.is_empty() || view.loaded(&request.instance).is_none() {
            return None;
        }
        let sampled_at = view.sampled_at;
        ledger
            .settling
            .retain(|(_, released_at)| *released_at > sampled_at);
        if let Some(choose::Outcome::Admit(device)) =
            choose::fits_beside_all(&ledger, request, view)
        {
            return Some(self.claim(&mut ledger, request, device));
        }
        let choose::Outcome::Admit(device) = choose::choose(&ledger, request, view) else {
            return None;
        };
        Some(self.claim(&mut ledger, request, device))
    }

    /// Reserves what `request` needs on `device`, under the lock that decided it.
    fn claim(&self, ledger: &mut Ledger, request: &Request, device: Option<u32>) -> Permit {
        let id = ledger.next_id;
        ledger.next_id += 1;
        ledger.claims.insert(
            id,
            Claim {
                instance: request.instance.clone(),
                needs: request.needs(),
                device,
            },
        );
        ledger.changed();
        Permit {
            inner: Arc::clone(&self.inner),
            id,
            device,
        }
    }

    /// Records an eviction the manager decided on its own (to make room after
    /// an out-of-memory), from `view`, so that the memory it frees is waited
    /// for as after one [`decide`](Self::decide) chose. Report it with
    /// [`evicted`](Self::evicted) as those.
    pub fn evicting(&self, instance: &str, view: &View) {
        let Some(l) = view.loaded(instance) else {
            return;
        };
        let mut ledger = lock(&self.inner.ledger);
        if ledger.evictions.iter().any(|e| e.instance == instance) {
            return;
        }
        ledger.evictions.push(Eviction {
            instance: instance.to_owned(),
            held: l.held,
            device: l.device,
            since: self.inner.clock.now(),
            vram_free_before: l
                .device
                .and_then(|d| view.device(d))
                .map_or(0, |d| d.free_bytes),
        });
        ledger.changed();
    }

    /// Reports that an instance [`Decision::Evict`] named has stopped (or could
    /// not be stopped: `stopped` false). Its memory is then waited for until it
    /// shows as free.
    pub fn evicted(&self, instance: &str, stopped: bool) {
        let mut ledger = lock(&self.inner.ledger);
        if !stopped {
            ledger.evictions.retain(|e| e.instance != instance);
        }
        self.inner.announce(ledger);
    }

    /// Waits until a reservation is released or an eviction reported since the
    /// decision that gave `ticket`, or until `timeout` (after which the caller
    /// samples again: memory that comes back is measured, not announced). Says
    /// whether something changed.
    pub fn wait_for_change(&self, ticket: Ticket, timeout: Duration) -> bool {
        let mut ledger = lock(&self.inner.ledger);
        ledger.waiters += 1;
        let (mut ledger, _) = self
            .inner
            .changed
            .wait_timeout_while(ledger, timeout, |l| l.generation == ticket.0)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ledger.waiters -= 1;
        ledger.generation != ticket.0
    }

    /// Tells waiters that something they cannot see changed (a worker stopped
    /// on its own, a new sample shows memory back).
    pub fn nudge(&self) {
        self.inner.announce(lock(&self.inner.ledger));
    }

    /// Calls running on `instance` under a permit.
    pub fn running(&self, instance: &str) -> usize {
        lock(&self.inner.ledger).running(instance)
    }

    /// Every running call's reservation.
    pub fn reservations(&self) -> Vec<Reservation> {
        let ledger = lock(&self.inner.ledger);
        let mut all: Vec<Reservation> = ledger
            .claims
            .values()
            .map(|c| Reservation {
                instance: c.instance.clone(),
                needs: c.needs,
                device: c.device,
            })
            .collect();
        all.sort_by(|a, b| a.instance.cmp(&b.instance));
        all
    }

    /// Instances whose evicted memory is still awaited.
    pub fn evictions(&self) -> Vec<String> {
        lock(&self.inner.ledger)
            .evictions
            .iter()
            .map(|e| e.instance.clone())
            .collect()
    }

    /// Drops the released claims a sample now covers, and the evictions whose
    /// memory is back or that waited past the bound.
    fn settle(&self, ledger: &mut Ledger, view: &View, now: Duration) {
        ledger
            .settling
            .retain(|(_, released_at)| *released_at > view.sampled_at);
        let bound = self.inner.options.return_timeout;
        let before = ledger.evictions.len();
        ledger.evictions.retain(|e| {
            if now.saturating_sub(e.since) > bound {
                tracing::warn!(
                    instance = %e.instance,
                    "memory freed by evicting {} did not all come back within {:?}; \
                     no longer waiting for it",
                    e.instance,
                    bound
                );
                return false;
            }
            let back = returned(e, view);
            back.ram_bytes < e.held.ram_bytes || back.vram_bytes < e.held.vram_bytes
        });
        if ledger.evictions.len() != before {
            ledger.changed();
        }
    }
}

/// How much of what an evicted instance held is free again.
///
/// GPU memory is measured: a driver may free it well after the process is gone.
/// RAM is back once the worker is gone from a view sampled after the eviction:
/// the kernel frees it when the process is reaped, and measuring it would not
/// work, since a forked worker's RSS counts pages it shares with its forkserver
/// (freed only in part) and `MemAvailable` moves with every other process.
fn returned(e: &Eviction, view: &View) -> Footprint {
    // A view sampled before the eviction was decided says nothing about it.
    if view.loaded(&e.instance).is_some() || view.sampled_at < e.since {
        return Footprint::default();
    }
    let vram_now = e
        .device
        .and_then(|d| view.device(d))
        .map_or(0, |d| d.free_bytes);
    Footprint {
        ram_bytes: e.held.ram_bytes,
        vram_bytes: vram_now
            .saturating_sub(e.vram_free_before)
            .min(e.held.vram_bytes),
    }
}
