//! What each job submitted through the API was asked to do (its plugin's arguments,
//! and the task adapter's method for a task job), for the job's detail
//! (`GET /api/jobs/{id}`, the dashboard). The queue and the journal keep no
//! arguments, as they may be large or private; the daemon keeps them in memory only,
//! bounded: the latest [`KEPT_JOBS`] jobs, each up to [`KEPT_BYTES`] of JSON (a
//! larger one is kept as its size alone). They are served only to whoever may submit
//! jobs (the API's authentication), who could send them anyway.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use serde_json::{json, Value};

/// The jobs whose arguments are kept, the latest first out.
pub(crate) const KEPT_JOBS: usize = 1000;
/// The largest arguments kept whole, as JSON text.
pub(crate) const KEPT_BYTES: usize = 64 * 1024;

#[derive(Debug, Default)]
pub(crate) struct JobArguments {
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    by_job: HashMap<u64, Value>,
    order: VecDeque<u64>,
}

impl JobArguments {
    /// Keep `arguments` of job `id`, dropping the oldest kept beyond the bound.
    pub(crate) fn keep(&self, id: u64, arguments: Value) {
        let size = serde_json::to_string(&arguments).map_or(0, |text| text.len());
        let arguments = match size > KEPT_BYTES {
            true => {
                json!({"not_kept": format!("{size} bytes of JSON, more than the {KEPT_BYTES} kept")})
            }
            false => arguments,
        };
        let mut kept = self.kept.lock();
        if kept.by_job.insert(id, arguments).is_none() {
            kept.order.push_back(id);
        }
        while kept.order.len() > KEPT_JOBS {
            if let Some(oldest) = kept.order.pop_front() {
                kept.by_job.remove(&oldest);
            }
        }
    }

    /// Job `id`'s arguments, if they are kept.
    pub(crate) fn of(&self, id: u64) -> Option<Value> {
        self.kept.lock().by_job.get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_jobs_are_kept_and_a_large_one_as_its_size() {
        let store = JobArguments::default();
        for id in 0..(KEPT_JOBS as u64 + 5) {
            store.keep(id, json!({"args": [id]}));
        }
        assert_eq!(store.of(0), None);
        assert_eq!(store.of(4), None);
        assert_eq!(store.of(5), Some(json!({"args": [5]})));
        assert_eq!(
            store.of(KEPT_JOBS as u64 + 4),
            Some(json!({"args": [KEPT_JOBS + 4]}))
        );

        store.keep(7, json!({"kwargs": {"text": "x".repeat(KEPT_BYTES)}}));
        let large = store.of(7).unwrap();
        assert!(
            large["not_kept"]
                .as_str()
                .unwrap()
                .contains("more than the 65536 kept"),
            "{large}"
        );
        assert_eq!(store.kept.lock().order.len(), KEPT_JOBS);
    }
}
