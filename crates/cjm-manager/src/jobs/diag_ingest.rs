//! Reading the workers' logs back into the diagnostics store: each plugin's log is
//! followed from where it ended when its first job was sent there, and every
//! attributed line (`cjm_interface::log_line`) of a call is filed under that call's
//! job. Lines of no call (the worker's own, a Python worker's plain text) stay in the
//! log file only.
//!
//! Run after each attempt, before each read, and every [`INGEST_EVERY`] while jobs
//! run (for a reader following a job from another process).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use cjm_interface::log_line::LogLine;
use parking_lot::Mutex;

use super::diagnostics::{job_of_call, Attributed, DiagnosticsError, DiagnosticsStore};

/// How often the logs of running jobs are read back.
pub(crate) const INGEST_EVERY: Duration = Duration::from_millis(250);
/// How often the retention query runs beside the bounds kept at every write.
const RETENTION_EVERY: Duration = Duration::from_secs(600);
/// Read at most this much of one log in one pass: a worker printing without pause
/// cannot make one pass hold the store for long.
const MAX_PASS_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug)]
pub(crate) struct Ingest {
    store: DiagnosticsStore,
    /// Per plugin: its log and how far it has been read. One lock for reading and
    /// storing, so that records are stored in the order they were written.
    logs: Mutex<HashMap<String, Followed>>,
}

#[derive(Debug)]
struct Followed {
    path: PathBuf,
    offset: u64,
}

impl Ingest {
    pub(crate) fn new(store: DiagnosticsStore) -> Self {
        Ingest {
            store,
            logs: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn store(&self) -> &DiagnosticsStore {
        &self.store
    }

    /// Follow `plugin`'s log at `path` from its current end, unless it is followed
    /// already. Called before a job's call is sent, so that its lines come after.
    pub(crate) fn follow(&self, plugin: &str, path: PathBuf) {
        let mut logs = self.logs.lock();
        if logs
            .get(plugin)
            .is_some_and(|followed| followed.path == path)
        {
            return;
        }
        let offset = std::fs::metadata(&path).map_or(0, |meta| meta.len());
        logs.insert(plugin.to_owned(), Followed { path, offset });
    }

    /// Read every followed log on from where it was left and store its attributed
    /// lines. Blocking.
    pub(crate) fn ingest(&self) -> Result<(), DiagnosticsError> {
        let mut logs = self.logs.lock();
        let mut records = Vec::new();
        for (plugin, followed) in logs.iter_mut() {
            for line in read_on(followed) {
                if let Some(call) = line.call.as_deref() {
                    records.push(Attributed {
                        job: job_of_call(call).to_owned(),
                        plugin: plugin.clone(),
                        line,
                    });
                }
            }
        }
        self.store.append(&records)
    }
}

/// The whole lines written to `followed`'s log since it was last read, as ours.
fn read_on(followed: &mut Followed) -> Vec<LogLine> {
    let Ok(mut file) = File::open(&followed.path) else {
        return Vec::new();
    };
    let Ok(end) = file.seek(SeekFrom::End(0)) else {
        return Vec::new();
    };
    if end < followed.offset {
        // Cut short or made anew: read it from its start.
        followed.offset = 0;
    }
    if end == followed.offset || file.seek(SeekFrom::Start(followed.offset)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file
        .take((end - followed.offset).min(MAX_PASS_BYTES))
        .read_to_end(&mut bytes)
        .is_err()
    {
        return Vec::new();
    }
    // A line still being written is read on the next pass, whole.
    let Some(last_newline) = bytes.iter().rposition(|&byte| byte == b'\n') else {
        if bytes.len() as u64 >= MAX_PASS_BYTES {
            followed.offset += bytes.len() as u64;
        }
        return Vec::new();
    };
    bytes.truncate(last_newline + 1);
    followed.offset += bytes.len() as u64;
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(LogLine::parse)
        .collect()
}

/// Open the store beside the journal at `journal` (on a blocking thread: another
/// host may hold it for a moment).
pub(super) async fn open(
    journal: &std::path::Path,
    retention: super::diagnostics::DiagnosticsRetention,
) -> Result<Ingest, DiagnosticsError> {
    let path = super::diagnostics::path_beside(journal);
    let opening = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || DiagnosticsStore::open(&path, retention))
    };
    match opening.await {
        Ok(store) => Ok(Ingest::new(store?)),
        Err(err) => Err(DiagnosticsError {
            path,
            what: String::from("opening it failed"),
            source: Box::new(err),
        }),
    }
}

impl super::Inner {
    /// Follow `plugin`'s log (where the host has one) before a call is sent there.
    pub(super) fn follow_log(&self, plugin: &str) {
        if let (Some(ingest), Some(path)) = (&self.diagnostics, self.host.log_path(plugin)) {
            ingest.follow(plugin, path);
        }
    }

    /// Read the logs back now, off this task: an attempt just ended.
    pub(super) fn ingest_soon(&self) {
        if let Some(ingest) = &self.diagnostics {
            let ingest = Arc::clone(ingest);
            tokio::task::spawn_blocking(move || log_failure(ingest.ingest()));
        }
    }
}

fn log_failure(result: Result<(), DiagnosticsError>) {
    if let Err(err) = result {
        tracing::warn!("{}", cjm_interface::ErrorChain(&err));
    }
}

/// Every [`INGEST_EVERY`], read the logs back; every [`RETENTION_EVERY`], apply the
/// retention. Ends once the jobs are gone.
pub(super) async fn keep_ingesting(ingest: Weak<Ingest>) {
    let mut since_retention = Duration::ZERO;
    loop {
        tokio::time::sleep(INGEST_EVERY).await;
        let Some(ingest) = ingest.upgrade() else {
            return;
        };
        since_retention += INGEST_EVERY;
        let retention_due = since_retention >= RETENTION_EVERY;
        if retention_due {
            since_retention = Duration::ZERO;
        }
        let pass = tokio::task::spawn_blocking(move || {
            log_failure(ingest.ingest());
            if retention_due {
                log_failure(ingest.store().apply_retention());
            }
        });
        let _ = pass.await;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::diagnostics::DiagnosticsRetention;
    use super::*;

    fn record(call: Option<&str>, msg: &str) -> String {
        LogLine {
            level: String::from("INFO"),
            call: call.map(str::to_owned),
            job: None,
            target: String::new(),
            msg: msg.to_owned(),
            ts_ms: 1,
        }
        .to_line()
    }

    #[test]
    fn lines_are_filed_under_their_calls_job_from_where_following_began() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("p.log");
        let mut file = std::fs::File::create(&log).unwrap();
        writeln!(file, "{}", record(Some("j-1"), "before following")).unwrap();
        let store = DiagnosticsStore::open(
            &dir.path().join("d.sqlite3"),
            DiagnosticsRetention::default(),
        )
        .unwrap();
        let ingest = Ingest::new(store);
        ingest.follow("p", log.clone());
        writeln!(file, "==== a header ====").unwrap();
        writeln!(file, "{}", record(Some("j-1"), "first")).unwrap();
        writeln!(file, "{}", record(None, "the worker's own")).unwrap();
        writeln!(file, "{}", record(Some("j-2"), "other job")).unwrap();
        writeln!(file, "{}", record(Some("j-1.2"), "second attempt")).unwrap();
        // Half a line: not read until whole.
        write!(file, "{{\"cjm_log\":\"INFO\",\"call\":\"j-1\",").unwrap();
        ingest.ingest().unwrap();
        let texts = |job: &str| -> Vec<String> {
            ingest
                .store()
                .read(job, None, 100)
                .unwrap()
                .records
                .into_iter()
                .map(|record| record.message)
                .collect()
        };
        assert_eq!(texts("j-1"), ["first", "second attempt"]);
        assert_eq!(texts("j-2"), ["other job"]);
        writeln!(file, "\"msg\":\"completed\",\"ts_ms\":2}}").unwrap();
        ingest.ingest().unwrap();
        assert_eq!(texts("j-1"), ["first", "second attempt", "completed"]);
    }
}
