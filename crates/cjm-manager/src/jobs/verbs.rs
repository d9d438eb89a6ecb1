//! The queue's remaining verbs (the original's `reorder`, `get_stats`): a queued job's
//! priority changed, and the count of jobs by state.

use super::journal::Record;
use super::model::{JobId, JobState, QueueStats, ResourceSnapshot};
use super::{Inner, Jobs, JobsError};

impl Jobs {
    /// Give queued job `id` priority `priority`: it moves in line as if submitted at
    /// that priority, keeping what its waiting has earned. Refused for a job that is
    /// not queued ([`JobsError::NotPending`]) or unknown.
    pub fn reorder(&self, id: JobId, priority: i32) -> Result<(), JobsError> {
        reorder(&self.inner, id, priority)
    }

    /// What job `id` was admitted with (declared needs, reservation, the scheduler's
    /// reading of the machine); `None` before it was sent to its worker, or for a job
    /// unknown here.
    pub fn resource_snapshot(&self, id: JobId) -> Option<ResourceSnapshot> {
        self.inner.book.lock().jobs.get(&id)?.resources.clone()
    }

    /// How many jobs are in each state now.
    pub fn stats(&self) -> QueueStats {
        let book = self.inner.book.lock();
        let mut stats = QueueStats::default();
        for entry in book.jobs.values() {
            let count = match entry.status.state {
                JobState::Queued => &mut stats.queued,
                JobState::Admitted => &mut stats.admitted,
                JobState::Running => &mut stats.running,
                JobState::Succeeded => &mut stats.succeeded,
                JobState::Failed => &mut stats.failed,
                JobState::Cancelled | JobState::Interrupted => &mut stats.cancelled,
            };
            *count += 1;
        }
        stats
    }
}

/// [`Jobs::reorder`], for the queue's own request watcher too.
pub(super) fn reorder(inner: &Inner, id: JobId, priority: i32) -> Result<(), JobsError> {
    let mut book = inner.book.lock();
    let book = &mut *book;
    let entry = book.jobs.get_mut(&id).ok_or(JobsError::UnknownJob { id })?;
    if entry.status.state != JobState::Queued {
        return Err(JobsError::NotPending {
            id,
            state: entry.status.state,
        });
    }
    let delta = priority.saturating_sub(entry.status.priority);
    if !book.queue.reprioritize(id, delta) {
        // Queued jobs are in line: one that is not would be a bug, not the caller's.
        tracing::error!("queued job {id} was not in line");
        return Err(JobsError::NotPending {
            id,
            state: entry.status.state,
        });
    }
    entry.status.priority = priority;
    let record = Record::Priority {
        id: entry.call_id.clone(),
        priority,
    };
    super::observe::record(inner, entry, record);
    tracing::info!("job {id} reordered to priority {priority}");
    Ok(())
}
