//! Which of a job's records the journal keeps (the successor cjm-substrate's
//! observability classes): every record of a `full` plugin's jobs; of an `ambient`
//! one's, only those of a job that failed, was cancelled or was retried, written
//! from the moment that is known (its submission and start first, with their own
//! times). A plugin called a hundred times a second so keeps its journal small;
//! what is in memory (status, events, `wait`) is the same for both.
//!
//! An ambient job not yet written is not in the journal if the host dies while it
//! runs: it is not reported interrupted on the next start.

use cjm_metadata::Observability;

use super::journal::Record;
use super::{Entry, Inner, JobState};

/// How far a job is in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kept {
    /// Every record, from its submission (a `full` plugin's job).
    All,
    /// Nothing yet: an `ambient` plugin's job that has neither failed, been
    /// cancelled nor been retried.
    NotYet,
    /// An `ambient` plugin's job, written since it failed, was cancelled or retried.
    Since,
}

impl Kept {
    pub(super) fn from_start(class: Observability) -> Kept {
        match class {
            Observability::Full => Kept::All,
            Observability::Ambient => Kept::NotYet,
        }
    }

    /// Whether a record of its submission is written at once.
    pub(super) fn at_submission(self) -> bool {
        self == Kept::All
    }
}

/// Record `record` of `entry`'s job if the journal keeps its records by now; an
/// ambient job's accounts, call metrics and reorders are held back until it is known whether it
/// will be (its submission and start are written from its status then).
pub(super) fn record(inner: &Inner, entry: &mut Entry, record: Record) {
    match entry.kept {
        Kept::NotYet => {
            if matches!(
                record,
                Record::Accounts { .. } | Record::Metrics { .. } | Record::Priority { .. }
            ) {
                entry.held_back.push(record);
            }
        }
        Kept::All | Kept::Since => inner.record(record),
    }
}

/// From now on keep `entry`'s records: an ambient job not yet written is written
/// as it has been so far (submitted, and started if it did). Under the book's lock,
/// as every record is.
pub(super) fn keep_from_now(inner: &Inner, entry: &mut Entry) {
    if entry.kept != Kept::NotYet {
        return;
    }
    entry.kept = Kept::Since;
    inner.record(Record::Submitted {
        id: entry.call_id.clone(),
        plugin: entry.status.plugin.clone(),
        priority: entry.status.priority,
        at: entry.status.submitted_at,
    });
    if let Some(started) = entry.status.started_at {
        inner.record(Record::State {
            id: entry.call_id.clone(),
            state: JobState::Running,
            at: started,
        });
    }
    for record in std::mem::take(&mut entry.held_back) {
        inner.record(record);
    }
}

/// Record `entry`'s ending: an ambient job is written now if it failed or was
/// cancelled, and left out if it succeeded.
pub(super) fn record_ending(inner: &Inner, entry: &mut Entry, ending: Record) {
    if matches!(entry.status.state, JobState::Failed | JobState::Cancelled) {
        keep_from_now(inner, entry);
    }
    record(inner, entry, ending);
    // A success not kept: what was held back goes with it.
    entry.held_back.clear();
}
