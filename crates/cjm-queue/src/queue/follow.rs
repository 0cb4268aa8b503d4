//! Following the manager: a running job's call that waits for room is
//! held back for the scheduler's reason (its `block_reason`).

use std::sync::Arc;

use serde_json::json;

use super::JobQueue;
use crate::lock;
use crate::model::JobEventType;

impl JobQueue {
    /// Follows the manager's admission: a running job's call that waits gets
    /// the reason as its `block_reason` (recorded and published as
    /// `BLOCK_REASON_CHANGED`), cleared once the call is admitted. With one
    /// job per instance (the default) the reason is the job's own.
    pub(super) fn watch_manager(&self) {
        let mut events = self.inner.manager.subscribe();
        let queue = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                let (instance, reason) = match e {
                    cjm_manager::ManagerEvent::Waiting {
                        instance_id,
                        reason,
                    } => (instance_id, Some(reason)),
                    cjm_manager::ManagerEvent::Admitted { instance_id, .. } => (instance_id, None),
                    _ => continue,
                };
                let Some(inner) = queue.upgrade() else { return };
                let me = Self { inner };
                let changed = lock(&me.inner.index).block(&instance, reason.as_deref());
                for super::index::Reblocked {
                    seq,
                    id,
                    sequence,
                    before,
                } in changed
                {
                    drop(me.inner.store.block_reason(seq, reason.clone()));
                    let sequence = sequence.as_ref().map(|(s, i)| (s, *i));
                    me.publish(
                        JobEventType::BlockReasonChanged,
                        &id,
                        &instance,
                        sequence,
                        || [("from", json!(before)), ("to", json!(reason))],
                    );
                }
            }
        });
    }
}
