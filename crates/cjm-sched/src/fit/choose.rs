//! The decision itself, on a snapshot: pure arithmetic over the view and the
//! ledger, so that every situation is a test without workers or GPUs.

use std::collections::HashMap;

use super::reason::{Holder, Never, Short, Wait, WaitFor, on};
use super::view::{Activity, Loaded, Request, View};
use super::{Ledger, returned};
use crate::footprint::Footprint;

/// What [`super::Scheduler::decide`] does with the request.
pub(super) enum Outcome {
    Admit(Option<u32>),
    Evict(Vec<String>),
    Wait(Wait),
    Never(Never),
}

/// What running calls reserved and their instances do not hold yet, per
/// instance: (RAM, GPU memory, device).
struct Outstanding(HashMap<String, (u64, u64, Option<u32>)>);

impl Outstanding {
    fn of(ledger: &Ledger, view: &View) -> Self {
        let mut claimed: HashMap<String, (Footprint, Option<u32>)> = HashMap::new();
        for c in ledger
            .claims
            .values()
            .chain(ledger.settling.iter().map(|(c, _)| c))
        {
            let entry = claimed
                .entry(c.instance.clone())
                .or_insert((Footprint::default(), c.device));
            entry.0 = entry.0.max(c.needs);
            entry.1 = entry.1.or(c.device);
        }
        Self(
            claimed
                .into_iter()
                .map(|(instance, (needs, device))| {
                    let held = view
                        .loaded(&instance)
                        .map_or(Footprint::default(), |l| l.held);
                    let ram = needs.ram_bytes.saturating_sub(held.ram_bytes);
                    let vram = needs.vram_bytes.saturating_sub(held.vram_bytes);
                    (instance, (ram, vram, device))
                })
                .collect(),
        )
    }

    fn ram(&self) -> u64 {
        self.0.values().map(|o| o.0).sum()
    }

    fn vram_on(&self, device: u32) -> u64 {
        self.0
            .values()
            .filter(|o| o.2 == Some(device))
            .map(|o| o.1)
            .sum()
    }

    fn claimed(&self, instance: &str) -> bool {
        self.0.contains_key(instance)
    }
}

/// One candidate placement's plan.
enum Plan {
    Admit {
        vram_left: u64,
    },
    Evict {
        victims: Vec<String>,
        reload_ms: f64,
    },
    Wait(Wait),
    Never(Never),
}

/// The hot path's check, without allocating: whether the call on a loaded
/// instance fits even if every other reservation and released claim were
/// entirely outstanding (none of it held yet) and its own instance had
/// reserved nothing: [`Outcome::Admit`] on the device to use, or `None` to ask
/// [`choose`]. Sound because it only ever counts more as taken than
/// [`choose`] does, and needs more for the call.
pub(super) fn fits_beside_all(ledger: &Ledger, request: &Request, view: &View) -> Option<Outcome> {
    let me = request.instance.as_str();
    if request.max_concurrent.is_some() {
        return None;
    }
    let loaded = view.loaded(me)?;
    let device = if request.wants_gpu() {
        let d = loaded.device?;
        Some(view.device(d)?)
    } else {
        None
    };
    let needs = request.needs();
    // Everything the others reserved, as if none of it were held yet.
    let mut taken = Footprint::default();
    for c in ledger
        .claims
        .values()
        .chain(ledger.settling.iter().map(|(c, _)| c))
        .filter(|c| c.instance != me)
    {
        taken.ram_bytes = taken.ram_bytes.saturating_add(c.needs.ram_bytes);
        if device.is_some_and(|d| c.device == Some(d.index)) {
            taken.vram_bytes = taken.vram_bytes.saturating_add(c.needs.vram_bytes);
        }
    }
    let more = Footprint {
        ram_bytes: needs.ram_bytes.saturating_sub(loaded.held.ram_bytes),
        vram_bytes: needs.vram_bytes.saturating_sub(loaded.held.vram_bytes),
    };
    let ram_fits = view.ram_free_bytes >= taken.ram_bytes.saturating_add(more.ram_bytes);
    let gpu_fits =
        device.is_none_or(|d| d.free_bytes >= taken.vram_bytes.saturating_add(more.vram_bytes));
    (ram_fits && gpu_fits).then(|| Outcome::Admit(device.map(|d| d.index)))
}

#[expect(
    clippy::too_many_lines,
    reason = "the checks run in the order a person would ask them, as one sequence"
)]
pub(super) fn choose(ledger: &Ledger, request: &Request, view: &View) -> Outcome {
    let me = &request.instance;
    if ledger.evictions.iter().any(|e| &e.instance == me) {
        return Outcome::Wait(Wait {
            instance: me.clone(),
            waits_for: WaitFor::OwnEviction,
            short: None,
            holders: Vec::new(),
        });
    }
    let running = ledger.running(me);
    if let Some(cap) = request.max_concurrent
        && running >= cap.max(1)
    {
        return Outcome::Wait(Wait {
            instance: me.clone(),
            waits_for: WaitFor::ConcurrencySlot { running, cap },
            short: None,
            holders: Vec::new(),
        });
    }
    let outstanding = Outstanding::of(ledger, view);
    let loaded = view.loaded(me);
    // What the instance holds or has already reserved counts towards its needs.
    let mut base = loaded.map_or(Footprint::default(), |l| l.held);
    if let Some(&(ram, vram, _)) = outstanding.0.get(me) {
        base.ram_bytes += ram;
        base.vram_bytes += vram;
    }
    let needs = request.needs();
    let extra = Footprint {
        ram_bytes: needs.ram_bytes.saturating_sub(base.ram_bytes),
        vram_bytes: needs.vram_bytes.saturating_sub(base.vram_bytes),
    };
    let starting_unseen = outstanding
        .0
        .keys()
        .filter(|i| view.loaded(i).is_none() && *i != me)
        .count();
    let needs_slot = loaded.is_none()
        && !outstanding.claimed(me)
        && view
            .max_workers
            .is_some_and(|max| view.loaded.len() + starting_unseen >= max);

    let devices: Vec<Option<u32>> = if !request.wants_gpu() {
        vec![None]
    } else if view.devices.is_empty() {
        return Outcome::Never(Never::NoGpu {
            instance: me.clone(),
            reason: view
                .no_gpu_reason
                .clone()
                .unwrap_or_else(|| "no GPU was found".to_owned()),
        });
    } else if let Some(d) = loaded
        .and_then(|l| l.device)
        .or_else(|| outstanding.0.get(me).and_then(|o| o.2))
    {
        vec![Some(d)]
    } else {
        view.devices.iter().map(|d| Some(d.index)).collect()
    };

    let ctx = Ctx {
        ledger,
        request,
        view,
        outstanding: &outstanding,
        extra,
        needs_slot,
    };
    let plans: Vec<(Option<u32>, Plan)> = devices.into_iter().map(|d| (d, ctx.plan(d))).collect();

    // Admit where it fits, on the device that keeps the most free; else the
    // eviction with the fewest victims and cheapest reloads; else wait; else never.
    if let Some((device, _)) = plans
        .iter()
        .filter_map(|(d, p)| match p {
            Plan::Admit { vram_left } => Some((*d, *vram_left)),
            _ => None,
        })
        .max_by_key(|&(d, left)| (left, std::cmp::Reverse(d)))
    {
        return Outcome::Admit(device);
    }
    if let Some(victims) = plans
        .iter()
        .filter_map(|(_, p)| match p {
            Plan::Evict { victims, reload_ms } => Some((victims, *reload_ms)),
            _ => None,
        })
        .min_by(|a, b| a.0.len().cmp(&b.0.len()).then(a.1.total_cmp(&b.1)))
        .map(|(v, _)| v.clone())
    {
        return Outcome::Evict(victims);
    }
    let mut nevers = Vec::new();
    for (_, plan) in plans {
        match plan {
            Plan::Wait(wait) => return Outcome::Wait(wait),
            Plan::Never(never) => nevers.push(never),
            Plan::Admit { .. } | Plan::Evict { .. } => {}
        }
    }
    // Every placement is impossible: report the one that came closest.
    let closest = nevers
        .into_iter()
        .max_by_key(|n| match n {
            Never::Gpu { ever_bytes, .. } => *ever_bytes,
            _ => 0,
        })
        .expect("at least one placement was planned");
    Outcome::Never(closest)
}

struct Ctx<'a> {
    ledger: &'a Ledger,
    request: &'a Request,
    view: &'a View,
    outstanding: &'a Outstanding,
    extra: Footprint,
    needs_slot: bool,
}

impl Ctx<'_> {
    fn me(&self) -> &str {
        &self.request.instance
    }

    fn others(&self) -> impl Iterator<Item = &Loaded> {
        self.view.loaded.iter().filter(|l| l.instance != self.me())
    }

    /// Memory that evictions freed and that has not shown as free yet.
    fn returning(&self, device: Option<u32>) -> (Footprint, Vec<String>, Footprint) {
        let mut remaining = Footprint::default();
        let mut expected = Footprint::default();
        let mut from = Vec::new();
        for e in &self.ledger.evictions {
            let back = returned(e, self.view);
            remaining.ram_bytes += e.held.ram_bytes - back.ram_bytes;
            expected.ram_bytes += e.held.ram_bytes;
            if device.is_some() && e.device == device {
                remaining.vram_bytes += e.held.vram_bytes - back.vram_bytes;
                expected.vram_bytes += e.held.vram_bytes;
            }
            from.push(e.instance.clone());
        }
        (remaining, from, expected)
    }

    #[expect(
        clippy::too_many_lines,
        reason = "never, fits, memory on its way, evict, wait: one sequence of cases"
    )]
    fn plan(&self, device: Option<u32>) -> Plan {
        let view = self.view;
        let free_ram = view.ram_free_bytes.saturating_sub(self.outstanding.ram());
        let short_ram = self.extra.ram_bytes.saturating_sub(free_ram);
        let dev = device.and_then(|d| view.device(d));
        let free_gpu = dev.map_or(0, |d| {
            d.free_bytes
                .saturating_sub(self.outstanding.vram_on(d.index))
        });
        let short_gpu = if dev.is_some() {
            self.extra.vram_bytes.saturating_sub(free_gpu)
        } else {
            0
        };
        let (returning, returning_from, returning_expected) = self.returning(device);
        // Some evicted worker may still be listed while it stops: what it holds is
        // counted there, not as returning.
        let held_by_others = |vram: bool| -> u64 {
            self.others()
                .filter(|l| !vram || l.device == device)
                .map(|l| {
                    if vram {
                        l.held.vram_bytes
                    } else {
                        l.held.ram_bytes
                    }
                })
                .sum()
        };

        // Could this ever fit, with every other worker gone?
        let ever_ram = view.ram_free_bytes + held_by_others(false) + returning.ram_bytes;
        if self.extra.ram_bytes > ever_ram {
            return Plan::Never(Never::Ram {
                instance: self.me().to_owned(),
                needs_bytes: self.extra.ram_bytes,
                free_bytes: view.ram_free_bytes,
                held_bytes: ever_ram - view.ram_free_bytes,
            });
        }
        if let Some(d) = dev {
            let ever = d.free_bytes + held_by_others(true) + returning.vram_bytes;
            if self.extra.vram_bytes > ever {
                return Plan::Never(Never::Gpu {
                    instance: self.me().to_owned(),
                    needs_bytes: self.extra.vram_bytes,
                    index: d.index,
                    name: d.name.clone(),
                    total_bytes: d.total_bytes,
                    ever_bytes: ever,
                });
            }
        }
        if short_ram == 0 && short_gpu == 0 && !self.needs_slot {
            return Plan::Admit {
                vram_left: free_gpu - self.extra.vram_bytes.min(free_gpu),
            };
        }

        let short = if short_gpu > 0 {
            let d = dev.expect("short of GPU memory only with a device");
            Some((
                Short::Gpu {
                    index: d.index,
                    name: d.name.clone(),
                },
                self.extra.vram_bytes,
                free_gpu,
            ))
        } else if short_ram > 0 {
            Some((Short::Ram, self.extra.ram_bytes, free_ram))
        } else {
            None
        };

        // Memory already on its way back covers it: wait for that, evict nothing.
        let wait_ram = short_ram.saturating_sub(returning.ram_bytes);
        let wait_gpu = short_gpu.saturating_sub(returning.vram_bytes);
        if !returning_from.is_empty() && wait_ram == 0 && wait_gpu == 0 && !self.needs_slot {
            let (back, expected) = match &short {
                Some((Short::Gpu { .. }, ..)) => (
                    returning_expected.vram_bytes - returning.vram_bytes,
                    returning_expected.vram_bytes,
                ),
                _ => (
                    returning_expected.ram_bytes - returning.ram_bytes,
                    returning_expected.ram_bytes,
                ),
            };
            return Plan::Wait(Wait {
                instance: self.me().to_owned(),
                waits_for: WaitFor::Memory {
                    from: returning_from,
                    back_bytes: back,
                    expected_bytes: expected,
                },
                short,
                holders: Vec::new(),
            });
        }

        if let Some((victims, reload_ms)) = self.victims(device, wait_ram, wait_gpu) {
            return Plan::Evict { victims, reload_ms };
        }

        // Nothing idle makes room: say what holds it.
        let Some(short) = short else {
            return Plan::Wait(Wait {
                instance: self.me().to_owned(),
                waits_for: WaitFor::WorkerSlot {
                    max: view.max_workers.unwrap_or(0),
                },
                short: None,
                holders: Vec::new(),
            });
        };
        let mut holders: Vec<Holder> = self
            .others()
            .filter(|l| matches!(short.0, Short::Ram) || l.device == device)
            .map(|l| {
                let claimed = self
                    .outstanding
                    .0
                    .get(&l.instance)
                    .map_or(0, |o| match short.0 {
                        Short::Ram => o.0,
                        Short::Gpu { .. } => o.1,
                    });
                let activity = if self.ledger.running(&l.instance) > 0
                    && matches!(l.activity, Activity::Idle | Activity::Kept)
                {
                    Activity::Busy
                } else {
                    l.activity
                };
                Holder {
                    instance: l.instance.clone(),
                    activity,
                    bytes: on(&short.0, l.held) + claimed,
                }
            })
            .filter(|h| h.bytes > 0)
            .collect();
        // Reservations of instances the view does not show yet (starting, or
        // loaded after the sample) hold memory too.
        for (instance, &(ram, vram, d)) in &self.outstanding.0 {
            let bytes = match short.0 {
                Short::Ram => ram,
                Short::Gpu { .. } if d == device => vram,
                Short::Gpu { .. } => 0,
            };
            if bytes > 0 && instance != self.me() && self.view.loaded(instance).is_none() {
                holders.push(Holder {
                    instance: instance.clone(),
                    activity: Activity::Starting,
                    bytes,
                });
            }
        }
        holders.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.instance.cmp(&b.instance)));
        holders.truncate(3);
        let busy: Vec<String> = holders
            .iter()
            .filter(|h| !matches!(h.activity, Activity::Idle | Activity::Kept))
            .map(|h| h.instance.clone())
            .collect();
        Plan::Wait(Wait {
            instance: self.me().to_owned(),
            waits_for: if busy.is_empty() {
                WaitFor::Outside
            } else {
                WaitFor::Calls(busy)
            },
            short: Some(short),
            holders,
        })
    }

    /// Idle workers whose eviction makes room: one alone if one is enough (the
    /// least recently used such, then the cheapest to reload), else the least
    /// recently used until enough. `None` when even all of them are not enough.
    fn victims(&self, device: Option<u32>, ram: u64, vram: u64) -> Option<(Vec<String>, f64)> {
        let mut idle: Vec<&Loaded> = self
            .others()
            .filter(|l| {
                l.activity == Activity::Idle
                    && self.ledger.running(&l.instance) == 0
                    && !self
                        .ledger
                        .evictions
                        .iter()
                        .any(|e| e.instance == l.instance)
            })
            .collect();
        idle.sort_by(|a, b| {
            a.last_used
                .cmp(&b.last_used)
                .then(a.reload_ms.total_cmp(&b.reload_ms))
                .then(a.instance.cmp(&b.instance))
        });
        let frees = |l: &Loaded| {
            let vram_freed = if device.is_some() && l.device == device {
                l.held.vram_bytes
            } else {
                0
            };
            (l.held.ram_bytes, vram_freed)
        };
        if let Some(one) = idle.iter().find(|l| {
            let (r, v) = frees(l);
            r >= ram && v >= vram
        }) {
            return Some((vec![one.instance.clone()], one.reload_ms));
        }
        let (mut ram, mut vram, mut slot) = (ram, vram, self.needs_slot);
        let mut victims = Vec::new();
        let mut reload_ms = 0.0;
        for l in idle {
            let (r, v) = frees(l);
            if (ram > 0 && r > 0) || (vram > 0 && v > 0) || slot {
                victims.push(l.instance.clone());
                reload_ms += l.reload_ms;
                ram = ram.saturating_sub(r);
                vram = vram.saturating_sub(v);
                slot = false;
            }
            if ram == 0 && vram == 0 && !slot {
                return Some((victims, reload_ms));
            }
        }
        None
    }
}
