//! Why each waiting job waits. A job's block reason is said only in its events
//! (`JobChange::Blocked`), never kept in its status: this keeps the last one of each
//! job that has not started, for `GET /api/system`.

use std::collections::HashMap;

use cjm_manager::jobs::{BlockReason, JobChange, JobEvent, JobId, JobState};
use parking_lot::Mutex;

/// The last block reason of each job that waits.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    reasons: Mutex<HashMap<JobId, BlockReason>>,
}

impl Admission {
    /// Follow `event`: a reason kept, replaced, or dropped once the job moves on.
    pub(crate) fn observe(&self, event: &JobEvent) {
        let mut reasons = self.reasons.lock();
        match &event.change {
            JobChange::Blocked(Some(reason)) => {
                reasons.insert(event.job, reason.clone());
            }
            JobChange::Blocked(None) => {
                reasons.remove(&event.job);
            }
            // Admitted: what held it in the queue holds it no more (a new reason
            // follows if admission waits); running or ended: nothing holds it.
            JobChange::State(state) if *state != JobState::Queued => {
                reasons.remove(&event.job);
            }
            _ => {}
        }
    }

    pub(crate) fn reason(&self, id: JobId) -> Option<BlockReason> {
        self.reasons.lock().get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(job: u64, change: JobChange) -> JobEvent {
        JobEvent {
            job: JobId(job),
            plugin: String::from("p"),
            change,
        }
    }

    #[test]
    fn a_reason_is_kept_while_the_job_waits_and_dropped_when_it_moves_on() {
        let admission = Admission::default();
        let concurrency = BlockReason::Concurrency {
            running: 1,
            limit: 1,
        };
        admission.observe(&event(1, JobChange::State(JobState::Queued)));
        admission.observe(&event(1, JobChange::Blocked(Some(concurrency.clone()))));
        assert_eq!(admission.reason(JobId(1)), Some(concurrency));
        admission.observe(&event(1, JobChange::State(JobState::Admitted)));
        assert_eq!(admission.reason(JobId(1)), None);
        admission.observe(&event(1, JobChange::Blocked(Some(BlockReason::Gpu))));
        assert_eq!(admission.reason(JobId(1)), Some(BlockReason::Gpu));
        admission.observe(&event(1, JobChange::State(JobState::Running)));
        assert_eq!(admission.reason(JobId(1)), None);
    }
}
