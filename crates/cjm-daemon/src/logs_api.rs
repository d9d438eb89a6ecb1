//! `GET /api/plugins/{name}/logs?tail=N[&follow=true]`: the end of a plugin's worker
//! log (`$CJM_HOME/logs/NAME.log`, every run of it, loaded or not) as `{lines}`, or,
//! followed, as Server-Sent Events: `lines` events, the tail first, then what is
//! appended as it is written.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::body::{self, Body, ChannelBody};
use crate::events::until_closing;
use crate::problem::ApiError;
use crate::request::{query, query_flag};
use crate::state::Shared;

/// Lines when `?tail=` is not given (what `cjm-ctl logs` shows).
const DEFAULT_TAIL: usize = 50;
/// The most lines one answer carries: a log of a long-lived worker can be large.
const MAX_TAIL: usize = 10_000;
/// How often a followed log is looked at (what `cjm-ctl logs -f` did in-process).
const POLL_EVERY: Duration = Duration::from_millis(200);

pub(crate) fn logs(
    shared: &Shared,
    name: &str,
    request_query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    cjm_metadata::validate_name(name)
        .map_err(|err| ApiError::bad_request("invalid_name", err.to_string()))?;
    let tail = match query(request_query, "tail") {
        None => DEFAULT_TAIL,
        Some(text) => text.parse::<usize>().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("?tail={text}: expected a number of lines"),
            )
        })?,
    }
    .min(MAX_TAIL);
    let follow = query_flag(request_query, "follow")?;
    let path = shared.manager.options().home.log_path(name);
    let bytes = std::fs::read(&path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => ApiError::not_found(
            "no_log",
            format!(
                "no log for plugin {name} at {} (is it installed and was it started?)",
                path.display()
            ),
        ),
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed",
            cjm_manager::ErrorCategory::Fatal,
            format!("cannot read the log {}: {err}", path.display()),
        ),
    })?;
    let lines = last_lines(&bytes, tail);
    if !follow {
        return Ok(body::json(StatusCode::OK, &json!({"lines": lines})));
    }
    Ok(follow_stream(
        path,
        lines,
        bytes.len() as u64,
        shared.closing.subscribe(),
    ))
}

/// The last `count` lines of `bytes` (a last line without its newline counts).
fn last_lines(bytes: &[u8], count: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let body = text.strip_suffix('\n').unwrap_or(&text);
    if body.is_empty() || count == 0 {
        return Vec::new();
    }
    let all: Vec<&str> = body.split('\n').collect();
    all[all.len().saturating_sub(count)..]
        .iter()
        .map(|line| (*line).to_owned())
        .collect()
}

fn lines_event(lines: &[String]) -> Bytes {
    Bytes::from(format!(
        "event: lines\ndata: {}\n\n",
        json!({ "lines": lines })
    ))
}

fn follow_stream(
    path: PathBuf,
    tail: Vec<String>,
    offset: u64,
    mut closing: watch::Receiver<bool>,
) -> Response<Body> {
    let (send, chunks) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        if send
            .send(Bytes::from_static(b"retry: 1000\n\n"))
            .await
            .is_err()
            || send.send(lines_event(&tail)).await.is_err()
        {
            return;
        }
        let mut reader = Appended::new(offset);
        loop {
            tokio::select! {
                _ = until_closing(&mut closing) => return,
                _ = send.closed() => return,
                _ = tokio::time::sleep(POLL_EVERY) => {}
            }
            let lines = match reader.read(&path) {
                Ok(lines) => lines,
                Err(err) => {
                    tracing::debug!("following {}: {err}", path.display());
                    continue;
                }
            };
            if !lines.is_empty() && send.send(lines_event(&lines)).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(ChannelBody::new(chunks).boxed());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// What is appended to a file, whole lines at a time.
struct Appended {
    offset: u64,
    /// The start of a line whose newline is not written yet.
    partial: Vec<u8>,
}

impl Appended {
    fn new(offset: u64) -> Self {
        Appended {
            offset,
            partial: Vec::new(),
        }
    }

    /// The whole lines written since the last read. A file that shrank (truncated or
    /// replaced) is read again from its start.
    fn read(&mut self, path: &Path) -> std::io::Result<Vec<String>> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        if len < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut appended = Vec::new();
        file.take(len - self.offset).read_to_end(&mut appended)?;
        self.offset += appended.len() as u64;
        self.partial.extend_from_slice(&appended);
        let Some(last_newline) = self.partial.iter().rposition(|byte| *byte == b'\n') else {
            return Ok(Vec::new());
        };
        let whole: Vec<u8> = self.partial.drain(..=last_newline).collect();
        Ok(String::from_utf8_lossy(&whole[..last_newline])
            .split('\n')
            .map(str::to_owned)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_tail_and_what_is_appended_come_as_whole_lines() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), vec!["b", "c"]);
        assert_eq!(last_lines(b"a\nb\nc", 5), vec!["a", "b", "c"]);
        assert!(last_lines(b"", 5).is_empty());
        assert!(last_lines(b"a\n", 0).is_empty());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        std::fs::write(&path, "old\n").unwrap();
        let mut reader = Appended::new(4);
        assert!(reader.read(&path).unwrap().is_empty());
        std::fs::write(&path, "old\nnew 1\nnew").unwrap();
        assert_eq!(reader.read(&path).unwrap(), vec!["new 1"]);
        std::fs::write(&path, "old\nnew 1\nnew 2\n").unwrap();
        assert_eq!(reader.read(&path).unwrap(), vec!["new 2"]);
        // Replaced by a shorter file: read from its start.
        std::fs::write(&path, "fresh\n").unwrap();
        assert_eq!(reader.read(&path).unwrap(), vec!["fresh"]);
    }
}
