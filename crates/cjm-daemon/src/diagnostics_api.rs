//! `GET /api/jobs/{id}/diagnostics?after_seq=N&limit=M`: a job's own log records (its
//! worker's `tracing` records and printed lines, attributed to the job), oldest
//! first, read on after `after_seq` so that a client can follow them page by page.

use std::sync::Arc;

use hyper::{Response, StatusCode};
use serde_json::json;

use crate::body::{self, Body};
use crate::problem::ApiError;
use crate::request::{job_id, query};
use crate::state::Shared;

const DEFAULT_LIMIT: usize = 200;
const MAX_LIMIT: usize = 5_000;

/// The records after `after_seq` (all from the first without it), at most `limit`;
/// `last_seq` is where to read on from, `dropped` how many the store's bounds lost.
pub(crate) async fn diagnostics(
    shared: Arc<Shared>,
    id: &str,
    request_query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let id = job_id(id)?;
    let after_seq = match query(request_query, "after_seq") {
        None => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("?after_seq={text}: expected a record number"),
            )
        })?),
    };
    let limit = match query(request_query, "limit") {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("?limit={text}: expected a number from 1 to {MAX_LIMIT}"),
                ))
            }
        },
    };
    let read = shared.jobs.diagnostics(id, after_seq, limit).await?;
    let last_seq = read.last_seq().or(after_seq);
    let records: Vec<_> = read
        .records
        .into_iter()
        .map(|record| {
            json!({
                "seq": record.seq,
                "ts": record.ts,
                "level": record.level,
                "target": record.target,
                "call_id": record.call_id,
                "message": record.message,
            })
        })
        .collect();
    Ok(body::json(
        StatusCode::OK,
        &json!({
            "job": id.0,
            "records": records,
            "last_seq": last_seq,
            "dropped": read.dropped,
        }),
    ))
}
