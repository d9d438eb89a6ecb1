//! `GET /api/jobs` with filters and paging, and `GET /api/jobs/history`: the
//! journal's history (every host's jobs on this home, kept beyond this run), newest
//! first, as `cjm-ctl jobs history` reads it.
//!
//! Paging is by `?offset=` and `?limit=` for both: the live list is small and
//! ordered by submission, and the journal's history is read newest first with the
//! same two numbers `cjm-ctl jobs history` takes.

use std::sync::Arc;

use cjm_manager::jobs::{history, HistoryQuery, JobState, JournalEntry};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::body::{self, Body};
use crate::json::{job_status, journal_entry};
use crate::problem::ApiError;
use crate::request::query;
use crate::state::Shared;

/// A page's size when none is asked for, and the most one may be.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// What a listing asks for: filters and a page.
#[derive(Debug, PartialEq)]
struct Asked {
    plugin: Option<String>,
    state: Option<JobState>,
    offset: usize,
    limit: usize,
}

fn number(request_query: Option<&str>, name: &str) -> Result<Option<usize>, ApiError> {
    query(request_query, name)
        .map(|text| {
            text.parse::<usize>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("?{name}={text}: expected a whole number"),
                )
            })
        })
        .transpose()
}

fn asked(request_query: Option<&str>, default_limit: usize) -> Result<Asked, ApiError> {
    let known = ["plugin", "state", "offset", "limit"];
    for pair in request_query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        if !known.contains(&key) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "?{key}: not a parameter of this route (it takes plugin, state, offset, limit)"
                ),
            ));
        }
    }
    let state = match query(request_query, "state") {
        None => None,
        Some(name) => Some(JobState::from_name(name).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!(
                    "?state={name}: not a job state (queued, admitted, running, succeeded, \
                     failed, cancelled, interrupted)"
                ),
            )
        })?),
    };
    let limit = number(request_query, "limit")?.unwrap_or(default_limit);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("?limit={limit}: expected 1 to {MAX_LIMIT}"),
        ));
    }
    Ok(Asked {
        plugin: query(request_query, "plugin")
            .filter(|plugin| !plugin.is_empty())
            .map(str::to_owned),
        state,
        offset: number(request_query, "offset")?.unwrap_or(0),
        limit,
    })
}

/// `GET /api/jobs[?plugin=&state=&offset=&limit=]`: the jobs known here, oldest
/// first, filtered, a page of them; `total` counts the filtered ones, `next_offset`
/// is the next page's (`null` on the last). `interrupted`: what the last host on this
/// home left unfinished.
pub(crate) fn list(
    shared: &Shared,
    request_query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let asked = asked(request_query, DEFAULT_LIMIT)?;
    let matching: Vec<_> = shared
        .jobs
        .list()
        .into_iter()
        .filter(|status| {
            asked
                .plugin
                .as_deref()
                .is_none_or(|plugin| status.plugin == plugin)
        })
        .filter(|status| asked.state.is_none_or(|state| status.state == state))
        .collect();
    let total = matching.len();
    let jobs: Vec<Value> = matching
        .iter()
        .skip(asked.offset)
        .take(asked.limit)
        .map(|status| job_status(status, shared.jobs.journal_id(status.id)))
        .collect();
    let end = asked.offset.saturating_add(jobs.len());
    let interrupted: Vec<Value> = shared
        .jobs
        .interrupted()
        .iter()
        .map(journal_entry)
        .collect();
    Ok(body::json(
        StatusCode::OK,
        &json!({
            "jobs": jobs,
            "total": total,
            "offset": asked.offset,
            "limit": asked.limit,
            "next_offset": (end < total).then_some(end),
            "interrupted": interrupted,
        }),
    ))
}

fn history_entry(entry: &JournalEntry) -> Value {
    json!({
        "id": entry.id,
        "plugin": entry.plugin,
        "priority": entry.priority,
        "state": entry.state.as_str(),
        "submitted_at": entry.submitted_at,
        "started_at": entry.started_at,
        "finished_at": entry.finished_at,
        "duration_s": entry.duration().map(|duration| duration.as_secs_f64()),
        "error_category": entry.error_category,
        "error": entry.error,
        "cancellation": entry.cancellation,
        "host_pid": entry.host_pid,
    })
}

/// `GET /api/jobs/history[?plugin=&state=&offset=&limit=]`: the journal's jobs,
/// newest first (default 20 a page, as `cjm-ctl jobs history`).
pub(crate) async fn journal_history(
    shared: Arc<Shared>,
    request_query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let asked = asked(request_query, 20)?;
    let Some(path) = shared.journal.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_journal",
            cjm_manager::ErrorCategory::UserInput,
            "this daemon keeps no job journal",
        ));
    };
    let mut history_query = HistoryQuery::default().page(asked.offset, asked.limit);
    if let Some(plugin) = &asked.plugin {
        history_query = history_query.plugin(plugin.clone());
    }
    if let Some(state) = asked.state {
        history_query = history_query.state(state);
    }
    // SQLite reads block: off the runtime's threads.
    let read = tokio::task::spawn_blocking(move || history(&path, &history_query)).await;
    let entries = match read {
        Ok(Ok(entries)) => entries,
        Ok(Err(err)) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "journal_unreadable",
                cjm_manager::ErrorCategory::Fatal,
                cjm_interface::ErrorChain(&err).to_string(),
            ))
        }
        Err(err) => return Err(crate::plugins_api::task_failed("reading the journal", err)),
    };
    let full_page = entries.len() == asked.limit;
    let jobs: Vec<Value> = entries.iter().map(history_entry).collect();
    Ok(body::json(
        StatusCode::OK,
        &json!({
            "jobs": jobs,
            "offset": asked.offset,
            "limit": asked.limit,
            "next_offset": full_page.then_some(asked.offset + asked.limit),
        }),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn filters_and_pages_are_checked() {
        let asked = asked(Some("plugin=echo&state=failed&offset=5&limit=2"), 100).unwrap();
        assert_eq!(
            asked,
            Asked {
                plugin: Some(String::from("echo")),
                state: Some(JobState::Failed),
                offset: 5,
                limit: 2
            }
        );
        assert_eq!(super::asked(None, 100).unwrap().limit, 100);
        for bad in [
            "state=done",
            "limit=0",
            "limit=x",
            "offset=-1",
            "after=3",
            "limit=5000",
        ] {
            let err = super::asked(Some(bad), 100).unwrap_err();
            assert_eq!(
                (err.status.as_u16(), err.error),
                (400, "invalid_query"),
                "{bad}"
            );
        }
    }
}
