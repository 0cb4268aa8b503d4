//! The dispatch index: each instance's pending jobs best first, the retries
//! waiting out their backoff, what runs, and what was read ahead. Three
//! numbers per pending job, never its arguments, so a million pending jobs
//! cost tens of MB.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use cjm_manager::CallCancel;

use crate::model::ResourceSnapshot;
use crate::store::Claimed;

/// How many of an instance's next pending jobs are read at once when one starts.
pub(super) const LOOKAHEAD: usize = 32;

/// The pending jobs by instance, and what runs.
#[derive(Default)]
pub(super) struct Index {
    /// Each instance's pending jobs as (rank, seq), best first.
    pub(super) pending: HashMap<Arc<str>, BTreeSet<(i64, i64)>>,
    /// Where each pending job is, by seq.
    pub(super) where_pending: HashMap<i64, (Arc<str>, i64)>,
    /// How many jobs each instance runs (or is starting).
    pub(super) busy: HashMap<Arc<str>, usize>,
    /// Running jobs by seq (from when they are taken).
    pub(super) running: HashMap<i64, Running>,
    /// What pending jobs read ahead run, by seq.
    pub(super) ahead: HashMap<i64, Claimed>,
    /// Retries waiting out their backoff, as (due ms, seq), soonest first.
    delayed: BTreeSet<(i64, i64)>,
    /// Each delayed retry's due time, rank and instance, by seq.
    where_delayed: HashMap<i64, (i64, i64, Arc<str>)>,
}

/// A job taken to run.
pub(super) struct Running {
    /// What stops it.
    pub(super) cancel: CallCancel,
    /// Its instance.
    pub(super) instance: Arc<str>,
    /// Its id and sequence, once read.
    pub(super) job: Option<(String, Option<(String, i64)>)>,
    /// Why the scheduler holds it back, while it does.
    pub(super) block: Option<String>,
    /// Its worker's latest periodic snapshot.
    pub(super) snapshot: Option<ResourceSnapshot>,
}

/// A running job whose block reason changed.
pub(super) struct Reblocked {
    pub(super) seq: i64,
    pub(super) id: String,
    pub(super) sequence: Option<(String, i64)>,
    /// The reason before.
    pub(super) before: Option<String>,
}

impl Index {
    /// Indexes pending job `seq`; one due after `now_ms` waits until then.
    pub(super) fn add_due(
        &mut self,
        seq: i64,
        rank: i64,
        instance: &str,
        due_ms: Option<i64>,
        now_ms: i64,
    ) {
        match due_ms {
            Some(due) if due > now_ms => {
                if self.where_pending.contains_key(&seq) || self.running.contains_key(&seq) {
                    return;
                }
                self.delayed.insert((due, seq));
                self.where_delayed
                    .insert(seq, (due, rank, Arc::from(instance)));
            }
            _ => self.add(seq, rank, instance),
        }
    }

    /// Moves the retries due by `now_ms` to the pending jobs; returns when
    /// the next one is due, if any waits.
    pub(super) fn promote(&mut self, now_ms: i64) -> Option<i64> {
        while let Some(&(due, seq)) = self.delayed.first() {
            if due > now_ms {
                return Some(due);
            }
            self.delayed.pop_first();
            if let Some((_, rank, instance)) = self.where_delayed.remove(&seq) {
                self.add(seq, rank, &instance);
            }
        }
        None
    }

    pub(super) fn add(&mut self, seq: i64, rank: i64, instance: &str) {
        if self.where_pending.contains_key(&seq) || self.running.contains_key(&seq) {
            return;
        }
        let key = match self.pending.get_key_value(instance) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(instance),
        };
        self.pending
            .entry(Arc::clone(&key))
            .or_default()
            .insert((rank, seq));
        self.where_pending.insert(seq, (key, rank));
    }

    /// Takes pending job `seq` out (to start it, or cancelled); what was read
    /// ahead for it stays for [`ahead_or_next`](Self::ahead_or_next).
    pub(super) fn remove(&mut self, seq: i64) -> bool {
        if let Some((due, _, _)) = self.where_delayed.remove(&seq) {
            self.delayed.remove(&(due, seq));
            return true;
        }
        let Some((instance, rank)) = self.where_pending.remove(&seq) else {
            return false;
        };
        if let Some(set) = self.pending.get_mut(&instance) {
            set.remove(&(rank, seq));
            if set.is_empty() {
                self.pending.remove(&instance);
            }
        }
        true
    }

    /// The best pending job of an instance that has room, taken out and
    /// counted as running.
    pub(super) fn take(
        &mut self,
        per_instance: usize,
        cancel: impl FnOnce() -> CallCancel,
    ) -> Option<(i64, Arc<str>, CallCancel)> {
        let (instance, &(rank, seq)) = self
            .pending
            .iter()
            .filter(|(i, _)| self.busy.get(*i).copied().unwrap_or(0) < per_instance)
            .filter_map(|(i, set)| set.first().map(|first| (i, first)))
            .min_by_key(|(_, first)| **first)?;
        let instance = Arc::clone(instance);
        let _ = rank;
        self.remove(seq);
        *self.busy.entry(Arc::clone(&instance)).or_default() += 1;
        // Taken: a cancel from now on is a running job's.
        let cancel = cancel();
        self.running.insert(
            seq,
            Running {
                cancel: cancel.clone(),
                instance: Arc::clone(&instance),
                job: None,
                block: None,
                snapshot: None,
            },
        );
        Some((seq, instance, cancel))
    }

    /// Job `seq` no longer runs on `instance`; the block reason it still
    /// had, if any (its call's admission not yet told).
    pub(super) fn done(&mut self, seq: i64, instance: &Arc<str>) -> Option<String> {
        let was = self.running.remove(&seq);
        if let Some(n) = self.busy.get_mut(instance) {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(instance);
            }
        }
        was.and_then(|r| r.block)
    }

    /// The running jobs of `instance` whose block reason changes to `reason`.
    pub(super) fn block(&mut self, instance: &str, reason: Option<&str>) -> Vec<Reblocked> {
        let mut changed = Vec::new();
        for (&seq, r) in &mut self.running {
            if &*r.instance != instance || r.block.as_deref() == reason {
                continue;
            }
            let Some((id, sequence)) = &r.job else {
                continue;
            };
            let before = std::mem::replace(&mut r.block, reason.map(str::to_owned));
            changed.push(Reblocked {
                seq,
                id: id.clone(),
                sequence: sequence.clone(),
                before,
            });
        }
        changed
    }

    pub(super) fn running_count(&self) -> usize {
        self.busy.values().sum()
    }

    /// What job `seq` (just taken) runs, if it was read ahead; else the jobs to
    /// read: it and the next ones of its instance not read yet.
    pub(super) fn ahead_or_next(&mut self, seq: i64, instance: &str) -> Result<Claimed, Vec<i64>> {
        if let Some(c) = self.ahead.remove(&seq) {
            return Ok(c);
        }
        let mut seqs = vec![seq];
        if let Some(set) = self.pending.get(instance) {
            seqs.extend(
                set.iter()
                    .map(|&(_, s)| s)
                    .filter(|s| !self.ahead.contains_key(s))
                    .take(LOOKAHEAD - 1),
            );
        }
        Err(seqs)
    }
}
