//! Jobs, events and journal entries as the API shows them.

use std::time::{SystemTime, UNIX_EPOCH};

use cjm_manager::jobs::{JobChange, JobEvent, JobStatus, JournalEntry};
use serde_json::{json, Value};

/// Seconds since the Unix epoch, to the millisecond.
pub(crate) fn time(at: SystemTime) -> f64 {
    let millis = at
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis())
        .unwrap_or(0);
    millis as f64 / 1000.0
}

pub(crate) fn job_status(status: &JobStatus, journal_id: Option<String>) -> Value {
    json!({
        "id": status.id.0,
        "journal_id": journal_id,
        "plugin": status.plugin,
        "priority": status.priority,
        "state": status.state.as_str(),
        "progress": status.progress.as_ref().map(|(fraction, message)| json!({
            "fraction": fraction,
            "message": message,
        })),
        "submitted_at": time(status.submitted_at),
        "admitted_at": status.admitted_at.map(time),
        "started_at": status.started_at.map(time),
        "finished_at": status.finished_at.map(time),
        "attempts": status.attempts,
        "failure": status.failure.as_ref().map(|failure| json!({
            "category": failure.category.as_str(),
            "retriable": failure.retriable,
            "message": failure.message,
        })),
        "cancelled": status.cancelled.map(|how| how.as_str()),
    })
}

/// An event's data: the job, its plugin, and what changed.
pub(crate) fn job_event(event: &JobEvent) -> Value {
    let mut value = json!({
        "job": event.job.0,
        "plugin": event.plugin,
    });
    let change = match &event.change {
        JobChange::State(state) => json!({"change": "state", "state": state.as_str()}),
        JobChange::Progress { fraction, message } => json!({
            "change": "progress",
            "fraction": fraction,
            "message": message,
        }),
        JobChange::Blocked(reason) => json!({
            "change": "blocked",
            "reason": reason.as_ref().map(ToString::to_string),
        }),
        JobChange::Cancel(phase) => json!({"change": "cancel", "phase": phase.as_str()}),
        other => json!({"change": "other", "detail": format!("{other:?}")}),
    };
    if let (Value::Object(value), Value::Object(change)) = (&mut value, change) {
        value.extend(change);
    }
    value
}

pub(crate) fn journal_entry(entry: &JournalEntry) -> Value {
    json!({
        "id": entry.id,
        "plugin": entry.plugin,
        "state": entry.state.as_str(),
        "submitted_at": entry.submitted_at,
        "started_at": entry.started_at,
        "finished_at": entry.finished_at,
        "host_pid": entry.host_pid,
    })
}

/// Resident memory of local process `pid`, in bytes, from `/proc/PID/statm`.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// MiB (as the manager reports GPU memory) to bytes, the metrics' base unit.
pub(crate) fn mb_to_bytes(mb: f64) -> u64 {
    (mb * 1024.0 * 1024.0).max(0.0) as u64
}
