//! What one call cost, measured on the host's side for every worker alike (the
//! successor, cjm-substrate, measures the same for its task calls): bytes each way,
//! the seconds from sending the request to having read the answer, the seconds
//! decoding it, and, where the worker accounted for its own time (the successor's
//! `task_account`), its seconds and I/O counters.

use std::collections::BTreeMap;
use std::time::Duration;

use cjm_interface::envelope::Account;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The event type of the account a successor's worker records for each task call.
const TASK_ACCOUNT: &str = "task_account";

/// One call's measurements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CallMetrics {
    /// The request body's length.
    pub bytes_out: u64,
    /// The answer body's length; `None` when no answer was read (the worker died,
    /// the connection failed, or it answered an error).
    pub bytes_in: Option<u64>,
    /// Seconds from sending the request to the answer read whole: the wire both
    /// ways and the worker's time.
    pub post_secs: f64,
    /// Seconds turning the answer into JSON; `None` without an answer.
    pub decode_secs: Option<f64>,
    /// The worker's own seconds for the call, where it accounted for them.
    pub worker_secs: Option<f64>,
    /// The worker's I/O over the call (from its `/proc/self/io`: `rchar`,
    /// `write_bytes`, ..), where it accounted for it.
    pub io: BTreeMap<String, i64>,
}

impl CallMetrics {
    pub(crate) fn sent(bytes_out: usize) -> Self {
        CallMetrics {
            bytes_out: bytes_out as u64,
            ..CallMetrics::default()
        }
    }

    pub(crate) fn answered(&mut self, bytes_in: usize, post: Duration, decode: Duration) {
        self.bytes_in = Some(bytes_in as u64);
        self.post_secs = post.as_secs_f64();
        self.decode_secs = Some(decode.as_secs_f64());
    }

    /// Take the worker's seconds and I/O from its task account, if it sent one.
    pub(crate) fn read_accounts(&mut self, accounts: &[Account]) {
        let Some(account) = accounts
            .iter()
            .find(|account| account.event_type == TASK_ACCOUNT)
        else {
            return;
        };
        self.worker_secs = account.payload.get("duration_s").and_then(Value::as_f64);
        if let Some(io) = account.payload.get("io").and_then(Value::as_object) {
            self.io = io
                .iter()
                .filter_map(|(counter, value)| Some((counter.clone(), value.as_i64()?)))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_task_account_gives_the_workers_seconds_and_io() {
        let mut metrics = CallMetrics::sent(10);
        metrics.answered(20, Duration::from_millis(30), Duration::from_millis(1));
        let payload = json!({"task": "t", "duration_s": 0.012,
                             "io": {"rchar": 4096, "write_bytes": 0, "odd": "x"}});
        metrics.read_accounts(&[
            Account::new("result_saved", Default::default()),
            Account::new(TASK_ACCOUNT, payload.as_object().unwrap().clone()),
        ]);
        assert_eq!(metrics.bytes_out, 10);
        assert_eq!(metrics.bytes_in, Some(20));
        assert_eq!(metrics.worker_secs, Some(0.012));
        assert_eq!(metrics.io.get("rchar"), Some(&4096));
        assert_eq!(metrics.io.get("write_bytes"), Some(&0));
        assert!(!metrics.io.contains_key("odd"));
        let mut none = CallMetrics::sent(1);
        none.read_accounts(&[]);
        assert_eq!(none.worker_secs, None);
        assert!(none.io.is_empty());
    }
}
