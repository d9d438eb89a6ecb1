//! `GET /api/system`: the machine as the scheduler reads it (CPU, memory, GPUs: the
//! manager's telemetry, a monitor plugin's where one is registered) and admission:
//! how many jobs are queued and running, and which wait for what.
//!
//! Why a job waits is said only in its events (`JobChange::Blocked`), never kept in
//! its status: [`Admission`] keeps the last reason of each job that has not started.

use std::collections::HashMap;
use std::time::Duration;

use cjm_manager::jobs::{BlockReason, JobChange, JobEvent, JobId, JobState};
use hyper::{Response, StatusCode};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::body::{self, Body};
use crate::state::Shared;

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

    fn reason(&self, id: JobId) -> Option<BlockReason> {
        self.reasons.lock().get(&id).cloned()
    }
}

fn reason_kind(reason: &BlockReason) -> &'static str {
    match reason {
        BlockReason::Concurrency { .. } => "concurrency",
        BlockReason::Memory => "memory",
        BlockReason::Gpu => "gpu",
        BlockReason::Scheduler { .. } => "scheduler",
        BlockReason::Placement { .. } => "placement",
        _ => "other",
    }
}

/// How long apart two readings are when the first has no CPU load: load is measured
/// between two readings, and the daemon's first has nothing before it.
const CPU_WINDOW: Duration = Duration::from_millis(250);

pub(crate) async fn system(shared: &Shared) -> Response<Body> {
    let mut read = shared.manager.system_stats().await;
    if read.as_ref().is_ok_and(|stats| stats.cpu_percent.is_none()) {
        tokio::time::sleep(CPU_WINDOW).await;
        read = shared.manager.system_stats().await;
    }
    let (stats, stats_error) = match read {
        Ok(stats) => match serde_json::to_value(&stats) {
            Ok(value) => (value, None),
            Err(err) => (Value::Null, Some(err.to_string())),
        },
        Err(err) => (
            Value::Null,
            Some(cjm_interface::ErrorChain(&err).to_string()),
        ),
    };
    let field = |name: &str| stats.get(name).cloned().unwrap_or(Value::Null);
    let counts = shared.jobs.stats();
    let waiting: Vec<Value> = shared
        .jobs
        .list()
        .iter()
        .filter(|status| matches!(status.state, JobState::Queued | JobState::Admitted))
        .map(|status| {
            let reason = shared.admission.reason(status.id);
            json!({
                "job": status.id.0,
                "plugin": status.plugin,
                "state": status.state.as_str(),
                "priority": status.priority,
                // None: nothing holds it but the jobs ahead of it.
                "reason": reason.as_ref().map(ToString::to_string),
                "kind": reason.as_ref().map(reason_kind),
            })
        })
        .collect();
    body::json(
        StatusCode::OK,
        &json!({
            "cpu": {"percent": field("cpu_percent")},
            "memory": {
                "available_mb": field("memory_available_mb"),
                "total_mb": field("memory_total_mb"),
            },
            "gpus": stats.get("gpus").cloned().unwrap_or_else(|| json!([])),
            // Whole, as `cjm-ctl stats --json` prints it (the scheduler's keys).
            "stats": stats,
            "stats_error": stats_error,
            "admission": {
                "queued": counts.queued,
                "admitted": counts.admitted,
                "running": counts.running,
                "waiting": waiting,
            },
        }),
    )
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
        assert_eq!(reason_kind(&admission.reason(JobId(1)).unwrap()), "gpu");
        admission.observe(&event(1, JobChange::State(JobState::Running)));
        assert_eq!(admission.reason(JobId(1)), None);
    }
}
