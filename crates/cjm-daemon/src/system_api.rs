//! `GET /api/system`: the machine as the scheduler reads it (CPU, memory, GPUs: the
//! manager's telemetry, a monitor plugin's where one is registered) and admission:
//! how many jobs are queued and running, and which wait for what (the reasons kept
//! by [`crate::admission::Admission`]).

use std::time::Duration;

use cjm_manager::jobs::{BlockReason, JobState};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::body::{self, Body};
use crate::state::Shared;

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
    use super::*;

    #[test]
    fn every_reason_has_a_kind() {
        assert_eq!(reason_kind(&BlockReason::Gpu), "gpu");
        assert_eq!(reason_kind(&BlockReason::Memory), "memory");
        let concurrency = BlockReason::Concurrency {
            running: 1,
            limit: 1,
        };
        assert_eq!(reason_kind(&concurrency), "concurrency");
    }
}
