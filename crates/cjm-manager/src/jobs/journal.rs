//! The job journal: every submission and outcome in an SQLite file under `CJM_HOME`,
//! so that a host that crashed can say which jobs were cut short, and `cjm-ctl jobs`
//! can list recent ones.
//!
//! Writes never wait on the disk: they go to a thread of their own over a channel,
//! which applies whatever has piled up in one transaction. Opening it (which may wait
//! up to the busy timeout for another host) is blocking work: [`Jobs::new`] does it on
//! a blocking thread.
//!
//! The history is bounded ([`JournalRetention`]): ended jobs past a count or an age
//! are deleted when a host opens the journal and every few hundred records after.
//! The file is the user's alone (0600, created in a 0700 folder): it names plugins
//! and holds their error messages.
//!
//! [`Jobs::new`]: super::Jobs::new

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::call_metrics::{self, JournalCallMetrics};
use super::composition::journal::{self as compositions, CompositionEntry, CompositionRecord};
use super::model::{Cancellation, JobState};

/// A journal that cannot be opened, written or read.
#[derive(Debug, thiserror::Error)]
#[error("job journal {}: {what}", path.display())]
pub struct JournalError {
    /// The journal file.
    pub path: PathBuf,
    /// What failed.
    pub what: String,
    /// Why.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// One job as the journal holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    /// `<session>-<number>`: unique across hosts and restarts.
    pub id: String,
    /// The plugin it ran.
    pub plugin: String,
    /// Its priority.
    pub priority: i32,
    /// Its last known state.
    pub state: JobState,
    /// Seconds since the Unix epoch.
    pub submitted_at: f64,
    /// When it was sent to the worker.
    pub started_at: Option<f64>,
    /// When it ended.
    pub finished_at: Option<f64>,
    /// `user_input`, `transient`, `resource` or `fatal`, for a failed job.
    pub error_category: Option<String>,
    /// The error, for a failed job.
    pub error: Option<String>,
    /// How it was cancelled, for a cancelled one.
    pub cancellation: Option<String>,
    /// The host process that ran it.
    pub host_pid: u32,
}

impl JournalEntry {
    /// How long it ran (from start, or from submission if it never started).
    pub fn duration(&self) -> Option<Duration> {
        let end = self.finished_at?;
        let from = self.started_at.unwrap_or(self.submitted_at);
        Some(Duration::from_secs_f64((end - from).max(0.0)))
    }
}

/// What the job queue records.
#[derive(Debug)]
pub(crate) enum Record {
    Submitted {
        id: String,
        plugin: String,
        priority: i32,
        at: SystemTime,
    },
    State {
        id: String,
        state: JobState,
        at: SystemTime,
    },
    Failed {
        id: String,
        category: String,
        message: String,
        at: SystemTime,
    },
    Cancelled {
        id: String,
        how: Cancellation,
        at: SystemTime,
    },
    /// The accounts a worker sent with an attempt's call (the original's
    /// `X-CJM-Accounts`).
    Accounts {
        id: String,
        attempt: u32,
        accounts: Vec<cjm_interface::envelope::Account>,
        at: SystemTime,
    },
    /// What an attempt's call cost (bytes, seconds, the worker's I/O).
    Metrics {
        id: String,
        attempt: u32,
        metrics: Vec<cjm_proxy::CallMetrics>,
        at: SystemTime,
    },
    /// A composition's submission, a node's change, its end.
    Composition(CompositionRecord),
    /// A queued job's priority changed (reordered).
    Priority { id: String, priority: i32 },
    /// A request of another process (`cjm-ctl jobs reorder`) was carried out, or
    /// refused: its answer.
    Answered { request: i64, answer: String },
    /// Answered once everything recorded before it is written.
    Synced(std::sync::mpsc::SyncSender<()>),
}

/// How much history the journal keeps: ended jobs beyond `max_jobs` (oldest
/// first) or older than `max_age` are deleted. Jobs still queued or running are
/// never deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalRetention {
    /// Ended jobs kept at most (default 100 000); `None`: no limit.
    pub max_jobs: Option<usize>,
    /// Ended jobs older than this are deleted (default: 30 days); `None`: no limit.
    pub max_age: Option<Duration>,
}

impl Default for JournalRetention {
    fn default() -> Self {
        JournalRetention {
            max_jobs: Some(100_000),
            max_age: Some(Duration::from_secs(30 * 24 * 3600)),
        }
    }
}

impl JournalRetention {
    /// Keep everything.
    pub const FOREVER: JournalRetention = JournalRetention {
        max_jobs: None,
        max_age: None,
    };

    /// At most `count` ended jobs.
    pub fn max_jobs(mut self, count: Option<usize>) -> Self {
        self.max_jobs = count;
        self
    }

    /// Ended jobs no older than `age`.
    pub fn max_age(mut self, age: Option<Duration>) -> Self {
        self.max_age = age;
        self
    }
}

/// Records written between two prunings of the history.
const PRUNE_EVERY: usize = 512;

/// The writing end; dropping it writes what is pending and closes the file (on a
/// blocking thread when dropped inside a runtime, which waits for it as it shuts
/// down).
#[derive(Debug)]
pub(crate) struct Journal {
    sender: Option<mpsc::Sender<Record>>,
    writer: Option<JoinHandle<()>>,
    /// Compositions that hosts which are gone left running, marked interrupted at
    /// opening.
    pub(crate) interrupted_compositions: Vec<CompositionEntry>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    host_pid INTEGER NOT NULL,
    plugin TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error_category TEXT,
    error TEXT,
    cancellation TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_submission ON jobs (submitted_at);
CREATE TABLE IF NOT EXISTS accounts (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS accounts_by_job ON accounts (job_id);
CREATE TABLE IF NOT EXISTS job_requests (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    kind TEXT NOT NULL,
    priority INTEGER,
    asked_at REAL NOT NULL,
    answer TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    host_pid INTEGER NOT NULL,
    host_started TEXT NOT NULL
);
";

/// A host's identity: its pid and when that process started, so that a reused pid
/// is not mistaken for the same host.
fn host_identity(pid: u32) -> Option<String> {
    use procfs_core::FromRead;
    let stat = procfs_core::process::Stat::from_file(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.starttime.to_string())
}

/// For `map_err`: the error of the journal at `path`, where `what` failed.
fn failed<E>(path: &Path, what: &str) -> impl FnOnce(E) -> JournalError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let (path, what) = (path.to_owned(), what.to_owned());
    move |source| JournalError {
        path,
        what,
        source: Box::new(source),
    }
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection, JournalError> {
    crate::sqlite_file::open_shared(path, flags).map_err(|failure| opening(path, failure))
}

fn opening(path: &Path, failure: crate::sqlite_file::OpenFailure) -> JournalError {
    JournalError {
        path: path.to_owned(),
        what: failure.what.to_owned(),
        source: failure.source,
    }
}

impl Journal {
    /// Open (creating it if needed) the journal at `path` for session `session`, and
    /// mark the jobs of hosts that are gone, left queued or running, as interrupted.
    /// Returns the journal and those jobs.
    pub(crate) fn open(
        path: &Path,
        session: &str,
        retention: JournalRetention,
    ) -> Result<(Journal, Vec<JournalEntry>), JournalError> {
        let schema = [SCHEMA, compositions::SCHEMA, call_metrics::SCHEMA].concat();
        let mut connection = crate::sqlite_file::open_private(path, &schema)
            .map_err(|failure| opening(path, failure))?;
        let (interrupted, interrupted_compositions) =
            mark_interrupted(&mut connection).map_err(failed(
                path,
                "cannot mark the jobs of hosts that are gone as interrupted",
            ))?;
        prune(&mut connection, retention).map_err(failed(path, "cannot delete old history"))?;
        let pid = std::process::id();
        connection
            .execute(
                "INSERT OR REPLACE INTO sessions (id, host_pid, host_started) VALUES (?1, ?2, ?3)",
                params![session, pid, host_identity(pid).unwrap_or_default()],
            )
            .map_err(failed(path, "cannot record this host's session"))?;
        let (sender, records) = mpsc::channel();
        let session = session.to_owned();
        let writer = std::thread::Builder::new()
            .name(String::from("cjm-journal"))
            .spawn(move || write_loop(connection, &session, pid, retention, &records))
            .map_err(failed(path, "cannot start its writer thread"))?;
        Ok((
            Journal {
                sender: Some(sender),
                writer: Some(writer),
                interrupted_compositions,
            },
            interrupted,
        ))
    }

    /// Wait until everything recorded so far is written (on a blocking thread).
    pub(crate) async fn sync(&self) {
        let (written, wait) = mpsc::sync_channel(1);
        self.record(Record::Synced(written));
        let _ = tokio::task::spawn_blocking(move || wait.recv()).await;
    }

    /// Record, without waiting for the disk.
    pub(crate) fn record(&self, record: Record) {
        if let Some(sender) = &self.sender {
            if sender.send(record).is_err() {
                tracing::warn!("the job journal's writer is gone; a record was lost");
            }
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has written everything.
        drop(self.sender.take());
        let Some(writer) = self.writer.take() else {
            return;
        };
        // Joining may wait for the disk: never on a runtime's worker. A runtime
        // waits for its blocking tasks as it shuts down, so nothing is lost.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || writer.join());
            }
            Err(_) => {
                let _ = writer.join();
            }
        }
    }
}

/// Create the journal's folder (0700) and file (0600) unless they exist, and make an
/// existing file the owner's alone.
fn write_loop(
    mut connection: Connection,
    session: &str,
    pid: u32,
    retention: JournalRetention,
    records: &mpsc::Receiver<Record>,
) {
    let mut since_pruned = 0usize;
    while let Ok(first) = records.recv() {
        let mut batch = vec![first];
        batch.extend(records.try_iter());
        if let Err(err) = write_batch(&mut connection, session, pid, &batch) {
            tracing::warn!(
                "cannot write {} record(s) to the job journal: {err}",
                batch.len()
            );
        }
        since_pruned += batch.len();
        if since_pruned >= PRUNE_EVERY {
            since_pruned = 0;
            if let Err(err) = prune(&mut connection, retention) {
                tracing::warn!("cannot delete old history from the job journal: {err}");
            }
        }
        for record in batch {
            if let Record::Synced(written) = record {
                let _ = written.send(());
            }
        }
    }
}

fn seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs_f64())
        .unwrap_or(0.0)
}

fn write_batch(
    connection: &mut Connection,
    session: &str,
    pid: u32,
    batch: &[Record],
) -> rusqlite::Result<()> {
    // Immediate: the write lock is taken first, so a batch never fails half-way on
    // another host's write (which a busy timeout does not cure in WAL mode).
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for record in batch {
        match record {
            Record::Submitted {
                id,
                plugin,
                priority,
                at,
            } => {
                transaction.execute(
                    "INSERT OR REPLACE INTO jobs (id, session, host_pid, plugin, priority, state, submitted_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)",
                    params![id, session, pid, plugin, priority, seconds(*at)],
                )?;
            }
            Record::State { id, state, at } => {
                let started = (*state == JobState::Running).then(|| seconds(*at));
                let finished = state.is_final().then(|| seconds(*at));
                transaction.execute(
                    "UPDATE jobs SET state = ?2,
                         started_at = COALESCE(?3, started_at),
                         finished_at = COALESCE(?4, finished_at)
                     WHERE id = ?1",
                    params![id, state.as_str(), started, finished],
                )?;
            }
            Record::Failed {
                id,
                category,
                message,
                at,
            } => {
                transaction.execute(
                    "UPDATE jobs SET state = 'failed', error_category = ?2, error = ?3, finished_at = ?4
                     WHERE id = ?1",
                    params![id, category, message, seconds(*at)],
                )?;
            }
            Record::Synced(_) => {}
            Record::Accounts {
                id,
                attempt,
                accounts,
                at,
            } => {
                for account in accounts {
                    let payload = serde_json::Value::Object(account.payload.clone()).to_string();
                    transaction.execute(
                        "INSERT INTO accounts (job_id, attempt, event_type, payload, recorded_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![id, attempt, account.event_type, payload, seconds(*at)],
                    )?;
                }
            }
            Record::Metrics {
                id,
                attempt,
                metrics,
                at,
            } => {
                for one in metrics {
                    call_metrics::insert(&transaction, id, *attempt, one, seconds(*at))?;
                }
            }
            Record::Priority { id, priority } => {
                transaction.execute(
                    "UPDATE jobs SET priority = ?2 WHERE id = ?1",
                    params![id, priority],
                )?;
            }
            Record::Answered { request, answer } => {
                transaction.execute(
                    "UPDATE job_requests SET answer = ?2 WHERE id = ?1",
                    params![request, answer],
                )?;
            }
            Record::Composition(record) => compositions::write(&transaction, session, pid, record)?,
            Record::Cancelled { id, how, at } => {
                transaction.execute(
                    "UPDATE jobs SET state = 'cancelled', cancellation = ?2, finished_at = ?3
                     WHERE id = ?1",
                    params![id, how.as_str(), seconds(*at)],
                )?;
            }
        }
    }
    transaction.commit()
}

/// Delete ended jobs beyond the retention's count or age.
fn prune(connection: &mut Connection, retention: JournalRetention) -> rusqlite::Result<()> {
    if retention == JournalRetention::FOREVER {
        return Ok(());
    }
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(age) = retention.max_age {
        let before = seconds(SystemTime::now()) - age.as_secs_f64();
        transaction.execute(
            &format!("DELETE FROM jobs WHERE state IN {ENDED} AND submitted_at < ?1"),
            params![before],
        )?;
        compositions::prune(&transaction, before)?;
    }
    if let Some(count) = retention.max_jobs {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        transaction.execute(
            &format!(
                "DELETE FROM jobs WHERE state IN {ENDED} AND rowid NOT IN (
                     SELECT rowid FROM jobs WHERE state IN {ENDED}
                     ORDER BY submitted_at DESC, rowid DESC LIMIT ?1)"
            ),
            params![count],
        )?;
    }
    // A job's accounts go with it.
    transaction.execute(
        "DELETE FROM accounts WHERE job_id NOT IN (SELECT id FROM jobs)",
        [],
    )?;
    transaction.execute(call_metrics::PRUNE, [])?;
    transaction.commit()
}

/// The states of ended jobs, as SQL.
const ENDED: &str = "('succeeded', 'failed', 'cancelled', 'interrupted')";

/// Sessions whose host is gone: their unfinished jobs become `interrupted`.
///
/// One immediate transaction: read and write under the write lock, so that two hosts
/// opening the journal at once take turns (a deferred one would fail the second with
/// `SQLITE_BUSY_SNAPSHOT`, which no busy timeout cures).
#[allow(clippy::type_complexity)]
fn mark_interrupted(
    connection: &mut Connection,
) -> rusqlite::Result<(Vec<JournalEntry>, Vec<CompositionEntry>)> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let sessions: Vec<(String, u32, String)> = transaction
        .prepare("SELECT id, host_pid, host_started FROM sessions")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut interrupted = Vec::new();
    let now = seconds(SystemTime::now());
    let gone: Vec<String> = sessions
        .into_iter()
        // A host that still runs keeps its session.
        .filter(|(_, pid, started)| host_identity(*pid).is_none_or(|now| now != *started))
        .map(|(session, _, _)| session)
        .collect();
    let interrupted_compositions = compositions::interrupt_gone(&transaction, &gone, now)?;
    for session in gone {
        let unfinished: Vec<JournalEntry> = transaction
            .prepare(&format!(
                "{SELECT} WHERE session = ?1 AND state IN ('queued', 'admitted', 'running')"
            ))?
            .query_map(params![session], entry)?
            .collect::<rusqlite::Result<_>>()?;
        transaction.execute(
            "UPDATE jobs SET state = 'interrupted', finished_at = ?2
             WHERE session = ?1 AND state IN ('queued', 'admitted', 'running')",
            params![session, now],
        )?;
        transaction.execute("DELETE FROM sessions WHERE id = ?1", params![session])?;
        interrupted.extend(unfinished.into_iter().map(|mut job| {
            job.state = JobState::Interrupted;
            job.finished_at = Some(now);
            job
        }));
    }
    transaction.commit()?;
    Ok((interrupted, interrupted_compositions))
}

const SELECT: &str = "SELECT id, plugin, priority, state, submitted_at, started_at, finished_at,
    error_category, error, cancellation, host_pid FROM jobs";

fn entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<JournalEntry> {
    let state: String = row.get(3)?;
    Ok(JournalEntry {
        id: row.get(0)?,
        plugin: row.get(1)?,
        priority: row.get(2)?,
        state: JobState::from_name(&state).unwrap_or(JobState::Interrupted),
        submitted_at: row.get(4)?,
        started_at: row.get(5)?,
        finished_at: row.get(6)?,
        error_category: row.get(7)?,
        error: row.get(8)?,
        cancellation: row.get(9)?,
        host_pid: row.get(10)?,
    })
}

/// One account a worker sent with a job's call, as the journal keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalAccount {
    /// The job (`<session>-<number>`).
    pub job_id: String,
    /// The attempt whose call it came with (1 for the first).
    pub attempt: u32,
    /// What happened (`task_account`, ..).
    pub event_type: String,
    /// Its details.
    pub payload: serde_json::Value,
    /// When the host received it (seconds since the Unix epoch).
    pub recorded_at: f64,
}

/// The accounts the journal at `path` keeps for job `job_id` (its journal id), in
/// the order received; nothing when there is no journal yet. Read only.
pub fn job_accounts(path: &Path, job_id: &str) -> Result<Vec<JournalAccount>, JournalError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let connection = open(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let read = || -> rusqlite::Result<Vec<JournalAccount>> {
        let mut statement = connection.prepare(
            "SELECT job_id, attempt, event_type, payload, recorded_at FROM accounts
             WHERE job_id = ?1 ORDER BY rowid",
        )?;
        let rows = statement.query_map(params![job_id], |row| {
            let payload: String = row.get(3)?;
            Ok(JournalAccount {
                job_id: row.get(0)?,
                attempt: row.get(1)?,
                event_type: row.get(2)?,
                payload: serde_json::from_str(&payload)
                    .unwrap_or(serde_json::Value::String(payload)),
                recorded_at: row.get(4)?,
            })
        })?;
        rows.collect()
    };
    read().map_err(failed(path, "cannot read job accounts"))
}

/// What each attempt of job `job_id` cost, as the journal at `path` keeps it, in
/// the order recorded; nothing when there is no journal yet (or one written before
/// the table was). Read only.
pub fn job_call_metrics(
    path: &Path,
    job_id: &str,
) -> Result<Vec<JournalCallMetrics>, JournalError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let connection = open(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let exists: bool = connection
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'call_metrics')",
            [],
            |row| row.get(0),
        )
        .map_err(failed(path, "cannot read call metrics"))?;
    if !exists {
        return Ok(Vec::new());
    }
    call_metrics::of_job(&connection, job_id).map_err(failed(path, "cannot read call metrics"))
}

/// The `limit` most recent jobs of the journal at `path`, newest first; nothing
/// when there is no journal yet. Read only: a running host's journal is untouched.
pub fn recent_jobs(path: &Path, limit: usize) -> Result<Vec<JournalEntry>, JournalError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let connection = open(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let read = || -> rusqlite::Result<Vec<JournalEntry>> {
        let has_jobs: Option<String> = connection
            .query_row(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'jobs'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        if has_jobs.is_none() {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        connection
            .prepare(&format!(
                "{SELECT} ORDER BY submitted_at DESC, rowid DESC LIMIT ?1"
            ))?
            .query_map(params![limit], entry)?
            .collect()
    };
    read().map_err(failed(path, "cannot read it"))
}

/// Which part of the journal's history [`history`] reads: newest first, filtered by
/// plugin and state, a page of `limit` after skipping `offset`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryQuery {
    /// Only this plugin's jobs.
    pub plugin: Option<String>,
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// At most this many (default: 50).
    pub limit: Option<usize>,
    /// Skipping this many of the newest first.
    pub offset: usize,
}

impl HistoryQuery {
    /// Only `plugin`'s jobs.
    pub fn plugin(mut self, plugin: impl Into<String>) -> Self {
        self.plugin = Some(plugin.into());
        self
    }

    /// Only jobs in `state`.
    pub fn state(mut self, state: JobState) -> Self {
        self.state = Some(state);
        self
    }

    /// A page of `limit` jobs after the first `offset`.
    pub fn page(mut self, offset: usize, limit: usize) -> Self {
        self.offset = offset;
        self.limit = Some(limit);
        self
    }
}

/// Jobs of the journal at `path` as `query` asks, newest first; nothing when there is
/// no journal yet. Read only.
pub fn history(path: &Path, query: &HistoryQuery) -> Result<Vec<JournalEntry>, JournalError> {
    let Some(connection) = open_to_read(path)? else {
        return Ok(Vec::new());
    };
    let limit = i64::try_from(query.limit.unwrap_or(50)).unwrap_or(i64::MAX);
    let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
    connection
        .prepare(&format!(
            "{SELECT} WHERE (?1 IS NULL OR plugin = ?1) AND (?2 IS NULL OR state = ?2)
             ORDER BY submitted_at DESC, rowid DESC LIMIT ?3 OFFSET ?4"
        ))
        .and_then(|mut statement| {
            statement
                .query_map(
                    params![
                        query.plugin,
                        query.state.map(JobState::as_str),
                        limit,
                        offset
                    ],
                    entry,
                )?
                .collect()
        })
        .map_err(failed(path, "cannot read it"))
}

/// How many jobs of the journal at `path` are in each state (its whole kept history,
/// every host's), by state name.
pub fn job_counts(path: &Path) -> Result<std::collections::BTreeMap<String, i64>, JournalError> {
    let Some(connection) = open_to_read(path)? else {
        return Ok(Default::default());
    };
    connection
        .prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(failed(path, "cannot read it"))
}

/// What [`request_reorder`] was told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReorderRefused {
    /// No such job in the journal.
    #[error("no job {0} in the journal")]
    Unknown(String),
    /// The job is not queued (its state then).
    #[error("job {job} is {state}, not queued: only a queued job can be reordered")]
    NotPending {
        /// The job.
        job: String,
        /// Its state.
        state: String,
    },
    /// The host that runs it is gone, or did not answer in time.
    #[error("job {job}: {why}")]
    NoAnswer {
        /// The job.
        job: String,
        /// Which.
        why: String,
    },
    /// The host answered with a refusal.
    #[error("job {job}: its host refused: {answer}")]
    Refused {
        /// The job.
        job: String,
        /// Its answer.
        answer: String,
    },
}

/// Ask the host that runs queued job `job` (its journal id) to give it `priority`,
/// through the journal at `path`, and wait up to `wait` for its answer. For another
/// process than the job's host (`cjm-ctl jobs reorder`); the host applies it as
/// [`Jobs::reorder`](super::Jobs::reorder) does.
pub fn request_reorder(
    path: &Path,
    job: &str,
    priority: i32,
    wait: Duration,
) -> Result<Result<(), ReorderRefused>, JournalError> {
    if !path.exists() {
        return Ok(Err(ReorderRefused::Unknown(job.to_owned())));
    }
    let connection = open(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let row: Option<(String, String, u32, Option<String>)> = connection
        .query_row(
            "SELECT jobs.state, jobs.session, jobs.host_pid, sessions.host_started
             FROM jobs LEFT JOIN sessions ON sessions.id = jobs.session WHERE jobs.id = ?1",
            params![job],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()
        .map_err(failed(path, "cannot read it"))?;
    let Some((state, _session, pid, started)) = row else {
        return Ok(Err(ReorderRefused::Unknown(job.to_owned())));
    };
    if state != JobState::Queued.as_str() {
        return Ok(Err(ReorderRefused::NotPending {
            job: job.to_owned(),
            state,
        }));
    }
    let alive = started.is_some_and(|started| host_identity(pid).is_some_and(|now| now == started));
    if !alive {
        return Ok(Err(ReorderRefused::NoAnswer {
            job: job.to_owned(),
            why: format!("its host (pid {pid}) is gone"),
        }));
    }
    connection
        .execute(
            "INSERT INTO job_requests (job, kind, priority, asked_at) VALUES (?1, 'reorder', ?2, ?3)",
            params![job, priority, seconds(SystemTime::now())],
        )
        .map_err(failed(path, "cannot write the request"))?;
    let request = connection.last_insert_rowid();
    let deadline = std::time::Instant::now() + wait;
    loop {
        let answer: Option<String> = connection
            .query_row(
                "SELECT answer FROM job_requests WHERE id = ?1",
                params![request],
                |row| row.get(0),
            )
            .map_err(failed(path, "cannot read the answer"))?;
        match answer.as_deref() {
            Some(REORDERED) => return Ok(Ok(())),
            Some(answer) => {
                return Ok(Err(ReorderRefused::Refused {
                    job: job.to_owned(),
                    answer: answer.to_owned(),
                }))
            }
            None if std::time::Instant::now() >= deadline => {
                // Not left for the host to find later: the caller has given up.
                let _ =
                    connection.execute("DELETE FROM job_requests WHERE id = ?1", params![request]);
                return Ok(Err(ReorderRefused::NoAnswer {
                    job: job.to_owned(),
                    why: format!("its host (pid {pid}) did not answer within {wait:?}"),
                }));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The answer of a request carried out.
pub(crate) const REORDERED: &str = "reordered";

/// Requests for session `session`'s jobs not answered yet: (request, job, priority).
pub(crate) fn pending_requests(
    connection: &Connection,
    session: &str,
) -> rusqlite::Result<Vec<(i64, String, i32)>> {
    connection
        .prepare(
            "SELECT id, job, priority FROM job_requests
             WHERE answer IS NULL AND kind = 'reorder' AND substr(job, 1, length(?1) + 1) = ?1 || '-'",
        )?
        .query_map(params![session], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect()
}

/// The journal at `path` opened to read, as the host's request watcher does.
pub(crate) fn open_for_requests(path: &Path) -> Result<Connection, JournalError> {
    open(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
}

/// The journal at `path` opened to read; `None` when it (or its jobs) is not there.
fn open_to_read(path: &Path) -> Result<Option<Connection>, JournalError> {
    if !path.exists() {
        return Ok(None);
    }
    let connection = open(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let has_jobs: Option<String> = connection
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'jobs'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(failed(path, "cannot read it"))?;
    Ok(has_jobs.map(|_| connection))
}

/// Job `id` as the journal at `path` holds it, read only; `None` if it holds no such
/// job (or there is no journal).
pub fn journal_entry(path: &Path, id: &str) -> Result<Option<JournalEntry>, JournalError> {
    let Some(connection) = open_to_read(path)? else {
        return Ok(None);
    };
    connection
        .query_row(&format!("{SELECT} WHERE id = ?1"), params![id], entry)
        .optional()
        .map_err(failed(path, "cannot read it"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_pages_newest_first_and_filters_by_plugin_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite3");
        assert_eq!(history(&path, &HistoryQuery::default()).unwrap(), []);
        let (journal, _) = Journal::open(&path, "h", JournalRetention::FOREVER).unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        for n in 0..10u64 {
            let id = format!("h-{n}");
            let at = t0 + Duration::from_secs(n);
            journal.record(Record::Submitted {
                id: id.clone(),
                plugin: String::from(if n % 2 == 0 { "even" } else { "odd" }),
                priority: 0,
                at,
            });
            if n < 6 {
                journal.record(Record::State {
                    id,
                    state: JobState::Succeeded,
                    at,
                });
            }
        }
        drop(journal);
        let ids = |query: HistoryQuery| -> Vec<String> {
            history(&path, &query)
                .unwrap()
                .into_iter()
                .map(|job| job.id)
                .collect()
        };
        assert_eq!(
            ids(HistoryQuery::default().page(0, 3)),
            ["h-9", "h-8", "h-7"]
        );
        assert_eq!(
            ids(HistoryQuery::default().page(3, 3)),
            ["h-6", "h-5", "h-4"]
        );
        assert_eq!(ids(HistoryQuery::default().page(9, 3)), ["h-0"]);
        assert_eq!(
            ids(HistoryQuery::default()
                .plugin("odd")
                .state(JobState::Succeeded)),
            ["h-5", "h-3", "h-1"]
        );
        assert_eq!(
            ids(HistoryQuery::default().state(JobState::Queued)).len(),
            4
        );
        let counts = job_counts(&path).unwrap();
        assert_eq!((counts["succeeded"], counts["queued"]), (6, 4));
    }

    #[test]
    fn records_are_written_off_the_caller_and_read_back_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite3");
        let (journal, interrupted) =
            Journal::open(&path, "s1", JournalRetention::default()).unwrap();
        assert!(interrupted.is_empty());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        for (n, plugin) in ["a", "b"].iter().enumerate() {
            journal.record(Record::Submitted {
                id: format!("s1-{n}"),
                plugin: (*plugin).to_owned(),
                priority: n as i32,
                at: t0 + Duration::from_secs(n as u64),
            });
        }
        journal.record(Record::State {
            id: String::from("s1-0"),
            state: JobState::Running,
            at: t0 + Duration::from_secs(5),
        });
        journal.record(Record::Failed {
            id: String::from("s1-0"),
            category: String::from("transient"),
            message: String::from("busy"),
            at: t0 + Duration::from_secs(7),
        });
        drop(journal); // everything written
        let jobs = recent_jobs(&path, 10).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].id, "s1-1");
        assert_eq!(jobs[1].state, JobState::Failed);
        assert_eq!(jobs[1].error_category.as_deref(), Some("transient"));
        assert_eq!(jobs[1].duration(), Some(Duration::from_secs(2)));
        assert_eq!(recent_jobs(&path, 1).unwrap().len(), 1);
    }

    #[test]
    fn accounts_are_kept_per_job_and_go_with_their_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite3");
        let retention = JournalRetention::default().max_jobs(Some(1)).max_age(None);
        let (journal, _) = Journal::open(&path, "s1", retention).unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let account = |kind: &str, n: i64| {
            let mut payload = serde_json::Map::new();
            payload.insert(String::from("n"), serde_json::json!(n));
            cjm_interface::envelope::Account::new(kind, payload)
        };
        for n in 0..2u64 {
            let id = format!("s1-{n}");
            journal.record(Record::Submitted {
                id: id.clone(),
                plugin: String::from("p"),
                priority: 0,
                at: t0 + Duration::from_secs(n),
            });
            journal.record(Record::Accounts {
                id: id.clone(),
                attempt: 2,
                accounts: vec![account("task_account", 1), account("result_saved", 2)],
                at: t0 + Duration::from_secs(n),
            });
            journal.record(Record::State {
                id,
                state: JobState::Succeeded,
                at: t0 + Duration::from_secs(n),
            });
        }
        drop(journal);
        let kept = job_accounts(&path, "s1-1").unwrap();
        let kinds: Vec<(&str, u32, i64)> = kept
            .iter()
            .map(|a| {
                (
                    a.event_type.as_str(),
                    a.attempt,
                    a.payload["n"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(kinds, [("task_account", 2, 1), ("result_saved", 2, 2)]);
        assert!(job_accounts(&path, "nope").unwrap().is_empty());
        // Pruned with its job (at the next open: one ended job is kept).
        let (journal, _) = Journal::open(&path, "s2", retention).unwrap();
        drop(journal);
        assert!(job_accounts(&path, "s1-0").unwrap().is_empty());
        assert_eq!(job_accounts(&path, "s1-1").unwrap().len(), 2);
        assert!(job_accounts(&dir.path().join("absent"), "s1-1")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn call_metrics_are_kept_per_attempt_and_go_with_their_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite3");
        let retention = JournalRetention::default().max_jobs(Some(1)).max_age(None);
        let (journal, _) = Journal::open(&path, "s1", retention).unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let measured = |bytes_out: u64, worker: Option<f64>| {
            let mut metrics = cjm_proxy::CallMetrics::default();
            metrics.bytes_out = bytes_out;
            metrics.bytes_in = Some(7);
            metrics.post_secs = 0.5;
            metrics.decode_secs = Some(0.001);
            metrics.worker_secs = worker;
            if worker.is_some() {
                metrics.io.insert(String::from("wchar"), 4096);
            }
            metrics
        };
        for n in 0..2u64 {
            let id = format!("s1-{n}");
            journal.record(Record::Submitted {
                id: id.clone(),
                plugin: String::from("p"),
                priority: 0,
                at: t0 + Duration::from_secs(n),
            });
            for attempt in 1..=2 {
                journal.record(Record::Metrics {
                    id: id.clone(),
                    attempt,
                    metrics: vec![measured(u64::from(attempt) * 10, Some(0.25))],
                    at: t0 + Duration::from_secs(n),
                });
            }
            journal.record(Record::State {
                id,
                state: JobState::Succeeded,
                at: t0 + Duration::from_secs(n),
            });
        }
        drop(journal);
        let kept = job_call_metrics(&path, "s1-1").unwrap();
        let rows: Vec<(u32, u64, Option<f64>)> = kept
            .iter()
            .map(|row| (row.attempt, row.metrics.bytes_out, row.metrics.worker_secs))
            .collect();
        assert_eq!(rows, [(1, 10, Some(0.25)), (2, 20, Some(0.25))]);
        assert_eq!(kept[0].metrics, measured(10, Some(0.25)));
        assert!(job_call_metrics(&path, "nope").unwrap().is_empty());
        let (journal, _) = Journal::open(&path, "s2", retention).unwrap();
        drop(journal);
        assert!(job_call_metrics(&path, "s1-0").unwrap().is_empty());
        assert_eq!(job_call_metrics(&path, "s1-1").unwrap().len(), 2);
        assert!(job_call_metrics(&dir.path().join("absent"), "s1-1")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_unfinished_jobs_of_a_host_that_is_gone_are_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite3");
        // A host that has exited: its session names a pid that no longer runs.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        {
            let connection = Connection::open(&path).unwrap();
            connection.execute_batch(SCHEMA).unwrap();
            connection
                .execute(
                    "INSERT INTO sessions VALUES ('old', ?1, 'x')",
                    params![gone_pid],
                )
                .unwrap();
            for (id, state) in [
                ("old-1", "running"),
                ("old-2", "succeeded"),
                ("old-3", "queued"),
            ] {
                connection
                    .execute(
                        "INSERT INTO jobs (id, session, host_pid, plugin, priority, state, submitted_at)
                         VALUES (?1, 'old', ?2, 'p', 0, ?3, 1.0)",
                        params![id, gone_pid, state],
                    )
                    .unwrap();
            }
        }
        let (_journal, interrupted) =
            Journal::open(&path, "new", JournalRetention::FOREVER).unwrap();
        let mut ids: Vec<&str> = interrupted.iter().map(|job| job.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["old-1", "old-3"]);
        let states: Vec<(String, JobState)> = recent_jobs(&path, 10)
            .unwrap()
            .into_iter()
            .map(|job| (job.id, job.state))
            .collect();
        assert!(states.contains(&(String::from("old-2"), JobState::Succeeded)));
        assert!(states.contains(&(String::from("old-1"), JobState::Interrupted)));
        // A second host opening it now finds nothing more to mark.
        let (_again, none) = Journal::open(&path, "newer", JournalRetention::FOREVER).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn a_composition_a_gone_host_left_running_is_listed_interrupted() {
        use crate::jobs::composition::journal::recent_compositions;
        use crate::jobs::{CompositionState, NodeState};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite3");
        {
            let (journal, _) = Journal::open(&path, "old", JournalRetention::FOREVER).unwrap();
            let nodes = vec![
                ("a".to_owned(), "p".to_owned()),
                ("b".to_owned(), "q".to_owned()),
            ];
            for id in ["old-c1", "old-c2"] {
                journal.record(Record::Composition(CompositionRecord::Submitted {
                    id: id.to_owned(),
                    nodes: nodes.clone(),
                    at: SystemTime::now(),
                }));
                journal.record(Record::Composition(CompositionRecord::Node {
                    composition: id.to_owned(),
                    node: "a".to_owned(),
                    state: NodeState::Succeeded,
                    job: Some(format!("{id}-job")),
                    reason: None,
                }));
            }
            journal.record(Record::Composition(CompositionRecord::Ended {
                id: "old-c2".to_owned(),
                state: CompositionState::Succeeded,
                at: SystemTime::now(),
            }));
        }
        // Its host ended (a crash: nothing more was written).
        Connection::open(&path)
            .unwrap()
            .execute(
                "UPDATE sessions SET host_started = 'a host that ended' WHERE id = 'old'",
                [],
            )
            .unwrap();
        let (journal, _) = Journal::open(&path, "new", JournalRetention::FOREVER).unwrap();
        let interrupted = &journal.interrupted_compositions;
        assert_eq!(interrupted.len(), 1, "{interrupted:?}");
        assert_eq!(interrupted[0].id, "old-c1");
        assert_eq!(interrupted[0].state, CompositionState::Interrupted);
        let states: Vec<&str> = interrupted[0]
            .nodes
            .iter()
            .map(|node| node.2.as_str())
            .collect();
        assert_eq!(states, ["succeeded", "interrupted"]);
        assert_eq!(interrupted[0].nodes[0].3.as_deref(), Some("old-c1-job"));
        let kept = recent_compositions(&path, 10).unwrap();
        assert_eq!(kept.len(), 2);
        assert!(kept
            .iter()
            .any(|c| c.id == "old-c2" && c.state == CompositionState::Succeeded));
    }

    #[test]
    fn a_journal_that_cannot_be_opened_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, "").unwrap();
        let err = Journal::open(
            &blocked.join("jobs.sqlite3"),
            "s",
            JournalRetention::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("jobs.sqlite3"), "{err}");
        assert_eq!(
            recent_jobs(&dir.path().join("none.sqlite3"), 5).unwrap(),
            []
        );
    }

    #[test]
    fn hosts_opening_one_journal_at_once_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite3");
        for round in 0..5 {
            // Each round leaves a session of a host that is gone, so that every
            // opening host has interrupted jobs to mark: reads then writes.
            {
                let (journal, _) =
                    Journal::open(&path, &format!("gone{round}"), JournalRetention::default())
                        .unwrap();
                journal.record(Record::Submitted {
                    id: format!("gone{round}-1"),
                    plugin: String::from("p"),
                    priority: 0,
                    at: SystemTime::now(),
                });
                drop(journal);
                let connection = Connection::open(&path).unwrap();
                connection
                    .execute(
                        "UPDATE sessions SET host_started = 'a host that ended' WHERE id = ?1",
                        params![format!("gone{round}")],
                    )
                    .unwrap();
            }
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let opened: Vec<_> = (0..6)
                .map(|host| {
                    let path = path.clone();
                    let start = std::sync::Arc::clone(&start);
                    std::thread::spawn(move || {
                        start.wait();
                        Journal::open(
                            &path,
                            &format!("r{round}h{host}"),
                            JournalRetention::default(),
                        )
                        .map(|(_, interrupted)| interrupted.len())
                    })
                })
                .collect();
            let marked: usize = opened
                .into_iter()
                .map(|host| host.join().unwrap().unwrap())
                .sum();
            // Exactly one of them marked the gone host's job.
            assert_eq!(marked, 1, "round {round}");
        }
    }

    #[test]
    fn the_history_is_bounded_by_count_and_age_and_never_loses_unfinished_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite3");
        let now = SystemTime::now();
        {
            let (journal, _) = Journal::open(&path, "s", JournalRetention::FOREVER).unwrap();
            for n in 0..20u64 {
                let id = format!("s-{n}");
                // 0-9: a year old; 10-19: recent. Every fifth one still running.
                let at = if n < 10 {
                    now - Duration::from_secs(365 * 24 * 3600) + Duration::from_secs(n)
                } else {
                    now - Duration::from_secs(100 - n)
                };
                journal.record(Record::Submitted {
                    id: id.clone(),
                    plugin: String::from("p"),
                    priority: 0,
                    at,
                });
                let state = if n % 5 == 0 {
                    JobState::Running
                } else {
                    JobState::Succeeded
                };
                journal.record(Record::State { id, state, at });
            }
        }
        let kept = |path: &Path| -> Vec<String> {
            let mut ids: Vec<String> = recent_jobs(path, 100)
                .unwrap()
                .into_iter()
                .map(|job| job.id)
                .collect();
            ids.sort_by_key(|id| id[2..].parse::<u64>().unwrap());
            ids
        };
        assert_eq!(kept(&path).len(), 20);
        // By age: the old ended ones go, the old running ones (0, 5) stay. The
        // sessions' host (this process) still runs, so nothing is interrupted.
        let retention = JournalRetention::default()
            .max_jobs(None)
            .max_age(Some(Duration::from_secs(3600)));
        drop(Journal::open(&path, "t", retention).unwrap());
        let expected: Vec<String> = [0, 5, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
            .iter()
            .map(|n| format!("s-{n}"))
            .collect();
        assert_eq!(kept(&path), expected);
        // By count: the 3 newest ended ones, and every unfinished one.
        let retention = JournalRetention::FOREVER.max_jobs(Some(3));
        drop(Journal::open(&path, "u", retention).unwrap());
        let expected: Vec<String> = [0, 5, 10, 15, 17, 18, 19]
            .iter()
            .map(|n| format!("s-{n}"))
            .collect();
        assert_eq!(kept(&path), expected);
    }

    #[test]
    fn the_journal_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home").join("jobs.sqlite3");
        drop(Journal::open(&path, "s", JournalRetention::default()).unwrap());
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        // One created by an older version, readable by all, is made private.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Journal::open(&path, "t", JournalRetention::default()).unwrap());
        assert_eq!(mode(&path), 0o600);
    }
}
