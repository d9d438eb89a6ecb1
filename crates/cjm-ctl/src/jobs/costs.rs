//! What a job's calls cost, for `cjm-ctl jobs show`: each attempt's measurements
//! (bytes each way, post, decode and worker seconds, the worker's I/O) and the
//! accounts its worker sent, from the journal.

use std::path::Path;

use anyhow::Result;
use cjm_manager::jobs::{job_accounts, job_call_metrics, JournalAccount, JournalCallMetrics};
use serde_json::{json, Value};

use crate::out::outln;

/// A job's measured calls and accounts.
pub(super) struct Costs {
    metrics: Vec<JournalCallMetrics>,
    accounts: Vec<JournalAccount>,
}

impl Costs {
    pub(super) fn read(journal: &Path, job_id: &str) -> Result<Costs> {
        Ok(Costs {
            metrics: job_call_metrics(journal, job_id)?,
            accounts: job_accounts(journal, job_id)?,
        })
    }

    pub(super) fn print(&self) -> Result<()> {
        for row in &self.metrics {
            let m = &row.metrics;
            let optional = |value: Option<f64>| {
                value.map_or_else(|| String::from("-"), |secs| format!("{secs:.4}"))
            };
            outln!(
                "call {}: {} B out, {} B in, post {:.4} s, decode {} s, worker {} s{}",
                row.attempt,
                m.bytes_out,
                m.bytes_in
                    .map_or_else(|| String::from("-"), |b| b.to_string()),
                m.post_secs,
                optional(m.decode_secs),
                optional(m.worker_secs),
                if m.io.is_empty() {
                    String::new()
                } else {
                    let io: Vec<String> =
                        m.io.iter()
                            .map(|(counter, value)| format!("{counter}={value}"))
                            .collect();
                    format!(", io {}", io.join(" "))
                }
            )?;
        }
        for account in &self.accounts {
            outln!(
                "account {}: {} {}",
                account.attempt,
                account.event_type,
                account.payload
            )?;
        }
        Ok(())
    }

    pub(super) fn json(&self) -> (Value, Value) {
        let metrics = self
            .metrics
            .iter()
            .map(|row| {
                let m = &row.metrics;
                json!({
                    "attempt": row.attempt,
                    "bytes_out": m.bytes_out,
                    "bytes_in": m.bytes_in,
                    "post_s": m.post_secs,
                    "decode_s": m.decode_secs,
                    "worker_s": m.worker_secs,
                    "io": m.io,
                    "recorded_at": row.recorded_at,
                })
            })
            .collect();
        let accounts = self
            .accounts
            .iter()
            .map(|account| {
                json!({
                    "attempt": account.attempt,
                    "event_type": account.event_type,
                    "payload": account.payload,
                    "recorded_at": account.recorded_at,
                })
            })
            .collect();
        (Value::Array(metrics), Value::Array(accounts))
    }
}
