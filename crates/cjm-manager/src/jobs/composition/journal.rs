//! Compositions in the job journal: one row per composition and one per node, written
//! by the journal's writer with the jobs' records, so that a host that crashed
//! leaves its running compositions to be listed as interrupted by the next.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

use super::status::{CompositionState, NodeState};

/// The compositions' tables, created beside the jobs'.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS compositions (
    id TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    host_pid INTEGER NOT NULL,
    state TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS composition_nodes (
    composition TEXT NOT NULL,
    node TEXT NOT NULL,
    position INTEGER NOT NULL,
    plugin TEXT NOT NULL,
    state TEXT NOT NULL,
    job TEXT,
    reason TEXT,
    PRIMARY KEY (composition, node)
);
";

/// What the queue records of a composition.
#[derive(Debug)]
pub(crate) enum CompositionRecord {
    Submitted {
        id: String,
        /// Each node's id and plugin, in order.
        nodes: Vec<(String, String)>,
        at: SystemTime,
    },
    Node {
        composition: String,
        node: String,
        state: NodeState,
        /// Its job's journal id, once it has one.
        job: Option<String>,
        /// Why it failed or was skipped.
        reason: Option<String>,
    },
    Ended {
        id: String,
        state: CompositionState,
        at: SystemTime,
    },
}

fn seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs_f64())
        .unwrap_or(0.0)
}

/// Write `record` in the writer's transaction.
pub(crate) fn write(
    transaction: &Transaction<'_>,
    session: &str,
    pid: u32,
    record: &CompositionRecord,
) -> rusqlite::Result<()> {
    match record {
        CompositionRecord::Submitted { id, nodes, at } => {
            transaction.execute(
                "INSERT OR REPLACE INTO compositions (id, session, host_pid, state, submitted_at)
                 VALUES (?1, ?2, ?3, 'running', ?4)",
                params![id, session, pid, seconds(*at)],
            )?;
            for (position, (node, plugin)) in nodes.iter().enumerate() {
                transaction.execute(
                    "INSERT OR REPLACE INTO composition_nodes (composition, node, position, plugin, state)
                     VALUES (?1, ?2, ?3, ?4, 'pending')",
                    params![id, node, i64::try_from(position).unwrap_or(i64::MAX), plugin],
                )?;
            }
        }
        CompositionRecord::Node {
            composition,
            node,
            state,
            job,
            reason,
        } => {
            transaction.execute(
                "UPDATE composition_nodes SET state = ?3, job = COALESCE(?4, job),
                     reason = COALESCE(?5, reason)
                 WHERE composition = ?1 AND node = ?2",
                params![composition, node, state.as_str(), job, reason],
            )?;
        }
        CompositionRecord::Ended { id, state, at } => {
            transaction.execute(
                "UPDATE compositions SET state = ?2, finished_at = ?3 WHERE id = ?1",
                params![id, state.as_str(), seconds(*at)],
            )?;
        }
    }
    Ok(())
}

/// Delete ended compositions submitted before `before` (seconds since the epoch),
/// with their nodes: the jobs' retention applied to compositions.
pub(crate) fn prune(transaction: &Transaction<'_>, before: f64) -> rusqlite::Result<()> {
    transaction.execute(
        "DELETE FROM composition_nodes WHERE composition IN (
             SELECT id FROM compositions WHERE state != 'running' AND submitted_at < ?1)",
        params![before],
    )?;
    transaction.execute(
        "DELETE FROM compositions WHERE state != 'running' AND submitted_at < ?1",
        params![before],
    )?;
    Ok(())
}

/// One composition as the journal holds it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CompositionEntry {
    /// `<session>-c<number>`.
    pub id: String,
    /// Its last known state.
    pub state: CompositionState,
    /// Seconds since the Unix epoch.
    pub submitted_at: f64,
    /// When it ended.
    pub finished_at: Option<f64>,
    /// Its nodes, in order: id, plugin, last known state, its job's journal id.
    pub nodes: Vec<(String, String, String, Option<String>)>,
    /// The host process that ran it.
    pub host_pid: u32,
}

/// Mark the running compositions of `gone_sessions` (sessions whose host is gone)
/// interrupted, with their unfinished nodes; those compositions. Runs in the
/// transaction that marks those hosts' jobs, before their sessions are forgotten.
pub(crate) fn interrupt_gone(
    transaction: &Transaction<'_>,
    gone_sessions: &[String],
    now: f64,
) -> rusqlite::Result<Vec<CompositionEntry>> {
    let mut interrupted = Vec::new();
    for session in gone_sessions {
        let ids: Vec<String> = transaction
            .prepare("SELECT id FROM compositions WHERE session = ?1 AND state = 'running'")?
            .query_map(params![session], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in ids {
            transaction.execute(
                "UPDATE composition_nodes SET state = 'interrupted'
                 WHERE composition = ?1 AND state IN ('pending', 'running')",
                params![id],
            )?;
            transaction.execute(
                "UPDATE compositions SET state = 'interrupted', finished_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            if let Some(entry) = read_one(transaction, &id)? {
                interrupted.push(entry);
            }
        }
    }
    Ok(interrupted)
}

fn read_one(connection: &Connection, id: &str) -> rusqlite::Result<Option<CompositionEntry>> {
    let head = connection
        .query_row(
            "SELECT id, state, submitted_at, finished_at, host_pid FROM compositions WHERE id = ?1",
            params![id],
            |row| {
                let state: String = row.get(1)?;
                Ok(CompositionEntry {
                    id: row.get(0)?,
                    state: CompositionState::from_name(&state)
                        .unwrap_or(CompositionState::Interrupted),
                    submitted_at: row.get(2)?,
                    finished_at: row.get(3)?,
                    nodes: Vec::new(),
                    host_pid: row.get(4)?,
                })
            },
        )
        .optional()?;
    let Some(mut entry) = head else {
        return Ok(None);
    };
    entry.nodes = connection
        .prepare(
            "SELECT node, plugin, state, job FROM composition_nodes
             WHERE composition = ?1 ORDER BY position",
        )?
        .query_map(params![id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(entry))
}

/// The `limit` most recent compositions of the journal at `path`, newest first;
/// nothing when there is no journal (or no composition) yet. Read only.
pub fn recent_compositions(
    path: &Path,
    limit: usize,
) -> Result<Vec<CompositionEntry>, rusqlite::Error> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    let has_table: Option<String> = connection
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'compositions'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if has_table.is_none() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = connection
        .prepare("SELECT id FROM compositions ORDER BY submitted_at DESC, rowid DESC LIMIT ?1")?
        .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
            row.get(0)
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut entries = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(entry) = read_one(&connection, &id)? {
            entries.push(entry);
        }
    }
    Ok(entries)
}
