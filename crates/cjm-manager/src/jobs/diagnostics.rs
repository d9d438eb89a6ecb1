//! Per-job diagnostics: the log records of each job's calls, in an SQLite file beside
//! the journal (`diagnostics.sqlite3`, 0600 in a 0700 folder), read back by job with
//! a `seq` cursor.
//!
//! Records are attributed where they are written: our workers name the call in each
//! line (`cjm_interface::log_line`), and the host files it under the job whose
//! attempt that call was. The table is the original's (`records` of its
//! `diagnostics_store.py`, with `call_id` and `plugin` added), so the original's
//! Python worker, given this file as `CJM_DIAGNOSTICS_DB`, writes its records here
//! stamped with the job id of its call envelope, and they read back the same way.
//!
//! Bounded ([`DiagnosticsRetention`]): per job and in total, the oldest records go
//! first, and each job keeps the count of its records dropped; records past an age
//! are deleted by a query, when the store is opened and periodically after.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cjm_interface::log_line::LogLine;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

/// A diagnostics file that cannot be opened, written or read.
#[derive(Debug, thiserror::Error)]
#[error("job diagnostics {}: {what}", path.display())]
pub struct DiagnosticsError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    pub what: String,
    /// Why.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

fn failed<E: std::error::Error + Send + Sync + 'static>(
    path: &Path,
    what: &str,
) -> impl FnOnce(E) -> DiagnosticsError {
    let path = path.to_owned();
    let what = what.to_owned();
    move |err| DiagnosticsError {
        path,
        what,
        source: Box::new(err),
    }
}

/// How many records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiagnosticsRetention {
    /// Records kept per job at most (default 10 000); the oldest go first.
    pub max_per_job: usize,
    /// Records kept in all at most (default 200 000); the oldest go first.
    pub max_total: usize,
    /// Records older than this are deleted (default 7 days); `None`: no limit.
    pub max_age: Option<Duration>,
}

impl Default for DiagnosticsRetention {
    fn default() -> Self {
        DiagnosticsRetention {
            max_per_job: 10_000,
            max_total: 200_000,
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

impl DiagnosticsRetention {
    /// At most `max_per_job` records per job and `max_total` in all (each at least 1).
    pub fn bounded(max_per_job: usize, max_total: usize) -> Self {
        DiagnosticsRetention {
            max_per_job: max_per_job.max(1),
            max_total: max_total.max(1),
            ..Self::default()
        }
    }

    /// With records older than `max_age` deleted (`None`: kept whatever their age).
    pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }
}

/// One record of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnosticRecord {
    /// Its place in the store: read on after it with `after_seq`.
    pub seq: i64,
    /// When it was written, UTC (`2026-01-01T12:00:00.123+00:00`).
    pub ts: String,
    /// `ERROR` .. `TRACE`, or `OUTPUT` for a line the plugin printed.
    pub level: String,
    /// Where it came from: a `tracing` target, the original's logger name.
    pub target: String,
    /// The attempt's call id (`<job>`, `<job>.2`, ..), where the worker named it.
    pub call_id: Option<String>,
    /// The text.
    pub message: String,
}

/// A job's records after a cursor, and how many of its records were dropped to keep
/// within the bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobDiagnostics {
    /// Oldest first.
    pub records: Vec<DiagnosticRecord>,
    /// Records of this job deleted by the bounds or their age.
    pub dropped: u64,
}

impl JobDiagnostics {
    /// The `seq` to read on after.
    pub fn last_seq(&self) -> Option<i64> {
        self.records.last().map(|record| record.seq)
    }
}

/// A record to store: the job it belongs to and the line as the worker wrote it.
#[derive(Debug, Clone)]
pub(crate) struct Attributed {
    pub(crate) job: String,
    pub(crate) plugin: String,
    pub(crate) line: LogLine,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    worker_session_id TEXT,
    job_id TEXT,
    level TEXT NOT NULL DEFAULT 'INFO',
    logger_name TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL,
    exc_text TEXT,
    call_id TEXT,
    plugin TEXT
);
CREATE INDEX IF NOT EXISTS idx_records_job ON records (job_id);
CREATE INDEX IF NOT EXISTS idx_records_ts ON records (ts);
CREATE TABLE IF NOT EXISTS dropped (
    job_id TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
";

/// The ISO form of a time in the original's records, from milliseconds.
const ISO_FROM_MS: &str = "strftime('%Y-%m-%dT%H:%M:%f+00:00', ?1 / 1000.0, 'unixepoch')";

/// The store, open for writing.
#[derive(Debug)]
pub struct DiagnosticsStore {
    path: PathBuf,
    connection: Mutex<Connection>,
    retention: DiagnosticsRetention,
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection, DiagnosticsError> {
    crate::sqlite_file::open_shared(path, flags).map_err(|failure| opening(path, failure))
}

fn opening(path: &Path, failure: crate::sqlite_file::OpenFailure) -> DiagnosticsError {
    DiagnosticsError {
        path: path.to_owned(),
        what: failure.what.to_owned(),
        source: failure.source,
    }
}

impl DiagnosticsStore {
    /// Open (creating it 0600, its folder 0700) the store at `path` and apply the
    /// retention. Blocking.
    pub fn open(path: &Path, retention: DiagnosticsRetention) -> Result<Self, DiagnosticsError> {
        let connection = crate::sqlite_file::open_private(path, SCHEMA)
            .map_err(|failure| opening(path, failure))?;
        let store = DiagnosticsStore {
            path: path.to_owned(),
            connection: Mutex::new(connection),
            retention,
        };
        store.apply_retention()?;
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Store `records` in one transaction, then keep each job they touch, and the
    /// whole store, within the bounds. Blocking.
    pub(crate) fn append(&self, records: &[Attributed]) -> Result<(), DiagnosticsError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection.lock();
        let write = |connection: &mut Connection| -> rusqlite::Result<()> {
            let transaction = connection.transaction()?;
            {
                let mut insert = transaction.prepare_cached(&format!(
                    "INSERT INTO records (ts, job_id, level, logger_name, message, call_id, plugin)
                     VALUES ({ISO_FROM_MS}, ?2, ?3, ?4, ?5, ?6, ?7)"
                ))?;
                for record in records {
                    let line = &record.line;
                    insert.execute(params![
                        i64::try_from(line.ts_ms).unwrap_or(i64::MAX),
                        record.job,
                        line.level,
                        line.target,
                        line.msg,
                        line.call,
                        record.plugin,
                    ])?;
                }
            }
            let mut jobs: Vec<&str> = records.iter().map(|record| record.job.as_str()).collect();
            jobs.sort_unstable();
            jobs.dedup();
            let per_job = i64::try_from(self.retention.max_per_job).unwrap_or(i64::MAX);
            for job in jobs {
                drop_where(
                    &transaction,
                    "seq IN (SELECT seq FROM records WHERE job_id = ?1 ORDER BY seq DESC
                             LIMIT -1 OFFSET ?2)",
                    params![job, per_job],
                )?;
            }
            let total = i64::try_from(self.retention.max_total).unwrap_or(i64::MAX);
            drop_where(
                &transaction,
                "seq IN (SELECT seq FROM records ORDER BY seq DESC LIMIT -1 OFFSET ?1)",
                params![total],
            )?;
            transaction.commit()
        };
        write(&mut connection).map_err(failed(&self.path, "cannot store records"))
    }

    /// Delete the records past the age limit, and past the total (the retention as a
    /// query; the per-job bound holds at every write). Blocking.
    pub fn apply_retention(&self) -> Result<(), DiagnosticsError> {
        let mut connection = self.connection.lock();
        let retention = self.retention;
        let prune = |connection: &mut Connection| -> rusqlite::Result<()> {
            let transaction = connection.transaction()?;
            if let Some(max_age) = retention.max_age {
                let now_ms = cjm_interface::log_line::LogLine::now_ms();
                let cutoff =
                    now_ms.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
                drop_where(
                    &transaction,
                    &format!("ts < {ISO_FROM_MS}"),
                    params![i64::try_from(cutoff).unwrap_or(i64::MAX)],
                )?;
            }
            let total = i64::try_from(retention.max_total).unwrap_or(i64::MAX);
            drop_where(
                &transaction,
                "seq IN (SELECT seq FROM records ORDER BY seq DESC LIMIT -1 OFFSET ?1)",
                params![total],
            )?;
            // Counts of jobs with nothing left are history of their own: bounded too.
            transaction.execute(
                "DELETE FROM dropped WHERE job_id NOT IN (SELECT DISTINCT job_id FROM records
                 WHERE job_id IS NOT NULL)",
                [],
            )?;
            transaction.commit()
        };
        prune(&mut connection).map_err(failed(&self.path, "cannot apply its retention"))
    }

    /// Records of `job` after `after_seq`, at most `limit`. Blocking.
    pub fn read(
        &self,
        job: &str,
        after_seq: Option<i64>,
        limit: usize,
    ) -> Result<JobDiagnostics, DiagnosticsError> {
        read(&self.connection.lock(), &self.path, job, after_seq, limit)
    }
}

/// Count the records `condition` selects as dropped, per job, and delete them.
fn drop_where(
    connection: &Connection,
    condition: &str,
    params: impl rusqlite::Params + Clone,
) -> rusqlite::Result<()> {
    connection.execute(
        &format!(
            "INSERT INTO dropped (job_id, count)
             SELECT job_id, COUNT(*) FROM records WHERE job_id IS NOT NULL AND ({condition})
             GROUP BY job_id
             ON CONFLICT (job_id) DO UPDATE SET count = count + excluded.count"
        ),
        params.clone(),
    )?;
    connection.execute(&format!("DELETE FROM records WHERE {condition}"), params)?;
    Ok(())
}

fn read(
    connection: &Connection,
    path: &Path,
    job: &str,
    after_seq: Option<i64>,
    limit: usize,
) -> Result<JobDiagnostics, DiagnosticsError> {
    let query = || -> rusqlite::Result<JobDiagnostics> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let records = connection
            .prepare_cached(
                "SELECT seq, ts, level, logger_name, call_id, message FROM records
                 WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?
            .query_map(params![job, after_seq.unwrap_or(0), limit], |row| {
                Ok(DiagnosticRecord {
                    seq: row.get(0)?,
                    ts: row.get(1)?,
                    level: row.get(2)?,
                    target: row.get(3)?,
                    call_id: row.get(4)?,
                    message: row.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let dropped: Option<i64> = connection
            .query_row(
                "SELECT count FROM dropped WHERE job_id = ?1",
                params![job],
                |row| row.get(0),
            )
            .optional()?;
        Ok(JobDiagnostics {
            records,
            dropped: dropped
                .and_then(|count| u64::try_from(count).ok())
                .unwrap_or(0),
        })
    };
    query().map_err(failed(path, "cannot read it"))
}

/// Records of `job` after `after_seq` (at most `limit`) in the store at `path`, read
/// only (for `cjm-ctl jobs show`, beside a host that writes it). No file: none.
pub fn job_diagnostics(
    path: &Path,
    job: &str,
    after_seq: Option<i64>,
    limit: usize,
) -> Result<JobDiagnostics, DiagnosticsError> {
    if !path.exists() {
        return Ok(JobDiagnostics::default());
    }
    let connection = open(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let has_records: Option<String> = connection
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'records'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(failed(path, "cannot read it"))?;
    if has_records.is_none() {
        return Ok(JobDiagnostics::default());
    }
    read(&connection, path, job, after_seq, limit)
}

/// The job whose attempt call `call` was: our jobs call their first attempt by the
/// job's id and the next ones `<id>.<n>`.
pub(crate) fn job_of_call(call: &str) -> &str {
    match call.rsplit_once('.') {
        Some((job, attempt))
            if !job.is_empty()
                && !attempt.is_empty()
                && attempt.bytes().all(|byte| byte.is_ascii_digit()) =>
        {
            job
        }
        _ => call,
    }
}

/// Where the diagnostics go beside the journal at `journal`.
pub fn path_beside(journal: &Path) -> PathBuf {
    journal.with_file_name("diagnostics.sqlite3")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(call: &str, msg: &str) -> Attributed {
        Attributed {
            job: job_of_call(call).to_owned(),
            plugin: String::from("p"),
            line: LogLine {
                level: String::from("INFO"),
                call: Some(call.to_owned()),
                job: None,
                target: String::from("t"),
                msg: msg.to_owned(),
                ts_ms: LogLine::now_ms(),
            },
        }
    }

    #[test]
    fn attempts_belong_to_their_job() {
        assert_eq!(job_of_call("ab12-3"), "ab12-3");
        assert_eq!(job_of_call("ab12-3.2"), "ab12-3");
        assert_eq!(job_of_call("ab12-3.x"), "ab12-3.x");
        assert_eq!(job_of_call(".2"), ".2");
    }

    #[test]
    fn each_job_reads_its_own_records_with_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home/diagnostics.sqlite3");
        let store = DiagnosticsStore::open(&path, DiagnosticsRetention::default()).unwrap();
        store
            .append(&[
                line("a-1", "a one"),
                line("b-2", "b one"),
                line("a-1.2", "a two"),
            ])
            .unwrap();
        let a = store.read("a-1", None, 100).unwrap();
        let texts: Vec<&str> = a.records.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(texts, ["a one", "a two"]);
        assert_eq!(a.records[1].call_id.as_deref(), Some("a-1.2"));
        let after = store.read("a-1", Some(a.records[0].seq), 100).unwrap();
        assert_eq!(after.records.len(), 1);
        assert_eq!(after.records[0].message, "a two");
        assert_eq!(
            job_diagnostics(&path, "b-2", None, 100).unwrap().records[0].message,
            "b one"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn the_oldest_go_first_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("diagnostics.sqlite3");
        let store = DiagnosticsStore::open(&path, DiagnosticsRetention::bounded(3, 5)).unwrap();
        let batch: Vec<Attributed> = (0..5).map(|i| line("a-1", &format!("a{i}"))).collect();
        store.append(&batch).unwrap();
        let a = store.read("a-1", None, 100).unwrap();
        let texts: Vec<&str> = a.records.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(texts, ["a2", "a3", "a4"]);
        assert_eq!(a.dropped, 2);
        // The total bound takes the oldest of any job.
        let batch: Vec<Attributed> = (0..3).map(|i| line("b-1", &format!("b{i}"))).collect();
        store.append(&batch).unwrap();
        let a = store.read("a-1", None, 100).unwrap();
        assert_eq!(a.records.len(), 2);
        assert_eq!(a.dropped, 3);
        assert_eq!(store.read("b-1", None, 100).unwrap().records.len(), 3);
    }

    #[test]
    fn records_past_their_age_are_deleted_by_the_retention_query() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("diagnostics.sqlite3");
        let retention =
            DiagnosticsRetention::bounded(100, 100).max_age(Some(Duration::from_secs(3600)));
        let store = DiagnosticsStore::open(&path, retention).unwrap();
        let mut old = line("a-1", "old");
        old.line.ts_ms -= 2 * 3600 * 1000;
        store.append(&[old, line("a-1", "new")]).unwrap();
        store.apply_retention().unwrap();
        let a = store.read("a-1", None, 100).unwrap();
        assert_eq!(a.records.len(), 1);
        assert_eq!((a.records[0].message.as_str(), a.dropped), ("new", 1));
    }
}
