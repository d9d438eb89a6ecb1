//! Each attempt's call measurements in the journal (`call_metrics`): what the proxy
//! measured of the call (bytes each way, post and decode seconds) and what the
//! worker accounted for (its seconds and I/O), the successor's per-call instrument,
//! kept here for every worker. The journal opens the file; this is its table.

use cjm_proxy::CallMetrics;
use rusqlite::{params, Connection, Row};

/// The table, created with the journal's others.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS call_metrics (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    bytes_in INTEGER,
    post_s REAL NOT NULL,
    decode_s REAL,
    worker_s REAL,
    io TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS call_metrics_by_job ON call_metrics (job_id);
";

/// Removes the rows of jobs the journal no longer keeps.
pub(super) const PRUNE: &str = "DELETE FROM call_metrics WHERE job_id NOT IN (SELECT id FROM jobs)";

/// One attempt's call, as the journal keeps it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JournalCallMetrics {
    /// The job (`<session>-<number>`).
    pub job_id: String,
    /// The attempt (1 for the first).
    pub attempt: u32,
    /// What was measured.
    pub metrics: CallMetrics,
    /// When the call ended (seconds since the Unix epoch).
    pub recorded_at: f64,
}

pub(super) fn insert(
    connection: &Connection,
    id: &str,
    attempt: u32,
    metrics: &CallMetrics,
    at: f64,
) -> rusqlite::Result<()> {
    let io = serde_json::to_string(&metrics.io).unwrap_or_else(|_| String::from("{}"));
    connection.execute(
        "INSERT INTO call_metrics (job_id, attempt, bytes_out, bytes_in, post_s, decode_s,
                                   worker_s, io, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            id,
            attempt,
            i64::try_from(metrics.bytes_out).unwrap_or(i64::MAX),
            metrics
                .bytes_in
                .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
            metrics.post_secs,
            metrics.decode_secs,
            metrics.worker_secs,
            io,
            at
        ],
    )?;
    Ok(())
}

/// The rows of `job_id`, in the order recorded.
pub(super) fn of_job(
    connection: &Connection,
    job_id: &str,
) -> rusqlite::Result<Vec<JournalCallMetrics>> {
    let mut statement = connection.prepare(
        "SELECT job_id, attempt, bytes_out, bytes_in, post_s, decode_s, worker_s, io,
                recorded_at
         FROM call_metrics WHERE job_id = ?1 ORDER BY rowid",
    )?;
    let rows = statement.query_map(params![job_id], from_row)?;
    rows.collect()
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<JournalCallMetrics> {
    let io: String = row.get(7)?;
    let bytes_out: i64 = row.get(2)?;
    let bytes_in: Option<i64> = row.get(3)?;
    let mut metrics = CallMetrics::default();
    metrics.bytes_out = u64::try_from(bytes_out).unwrap_or_default();
    metrics.bytes_in = bytes_in.and_then(|bytes| u64::try_from(bytes).ok());
    metrics.post_secs = row.get(4)?;
    metrics.decode_secs = row.get(5)?;
    metrics.worker_secs = row.get(6)?;
    // Written by this module from a map: anything else is a damaged row, shown empty.
    metrics.io = serde_json::from_str(&io).unwrap_or_default();
    Ok(JournalCallMetrics {
        job_id: row.get(0)?,
        attempt: row.get(1)?,
        metrics,
        recorded_at: row.get(8)?,
    })
}
