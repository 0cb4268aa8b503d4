//! The dispatch index: each instance's pending jobs best first, what runs,
//! and what was read ahead. Three numbers per pending job, never its
//! arguments, so a million pending jobs cost tens of MB.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

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
    /// Running jobs by seq: their id and instance.
    pub(super) running: HashMap<i64, (String, Arc<str>)>,
    /// What pending jobs read ahead run, by seq.
    pub(super) ahead: HashMap<i64, Claimed>,
}

impl Index {
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
    pub(super) fn take(&mut self, per_instance: usize) -> Option<(i64, Arc<str>)> {
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
        self.running
            .insert(seq, (String::new(), Arc::clone(&instance)));
        Some((seq, instance))
    }

    pub(super) fn done(&mut self, seq: i64, instance: &Arc<str>) {
        self.running.remove(&seq);
        if let Some(n) = self.busy.get_mut(instance) {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(instance);
            }
        }
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
