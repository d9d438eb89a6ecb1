//! `GET /api/openapi.json`: an OpenAPI 3.1 document of every route, written as a
//! table here (a serde_json value built once), not derived by a crate: the routes are
//! matched by hand in `api.rs`, so a derive macro would have nothing to read them
//! from, and a crate such as utoipa would bring its build time and a second
//! description of each handler. The tests below hold the table to the router: every
//! arm of `api.rs`'s `allowed()` is in it with the same methods, and every path in it
//! is an arm.

use std::sync::OnceLock;

use hyper::{Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::body::{self, Body};

/// One operation: method, path (`{name}` for a parameter), the part of the daemon
/// that serves it, a summary, its query parameters, its JSON body's schema.
struct Op {
    method: &'static str,
    path: &'static str,
    part: Part,
    summary: &'static str,
    query: &'static [(&'static str, &'static str, &'static str)],
    body: Option<fn() -> Value>,
    /// What a success answers with: a status and a content type.
    answers: (&'static str, &'static str),
}

/// Which part of the daemon serves a route (`x-cjm-part` in the document).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Api,
    Cli,
    Auth,
    Dash,
}

/// The parts whose routes this build documents but does not serve yet (they are
/// built beside it and merged later; empty once they are).
#[cfg(test)]
pub(crate) const OTHER_PARTS: &[Part] = &[];

const JSON: &str = "application/json";

fn config_body() -> Value {
    json!({
        "type": "object",
        "properties": {"config": {"type": "object", "description": "checked against the plugin's config schema"}},
        "additionalProperties": false,
    })
}

fn load_body() -> Value {
    json!({
        "type": "object",
        "properties": {
            "config": {"type": "object"},
            "instance": {"type": "string", "description": "load it once more under this name"},
        },
        "additionalProperties": false,
    })
}

fn job_body() -> Value {
    json!({
        "type": "object",
        "required": ["plugin"],
        "properties": {
            "plugin": {"type": "string"},
            "args": {"type": "array"},
            "kwargs": {"type": "object"},
            "priority": {"type": "integer", "description": "higher goes first"},
            "task": {
                "type": "object",
                "description": "call a task adapter's method instead of execute (what cjm-ctl task sends; POST /api/tasks takes the same flat)",
                "required": ["task", "method"],
                "properties": {"task": {"type": "string"}, "method": {"type": "string"}},
                "additionalProperties": false,
            },
        },
        "additionalProperties": false,
    })
}

fn task_body() -> Value {
    json!({
        "type": "object",
        "required": ["plugin", "task", "method"],
        "properties": {
            "plugin": {"type": "string"},
            "task": {"type": "string", "description": "such as text-statistics"},
            "method": {"type": "string"},
            "kwargs": {"type": "object"},
            "priority": {"type": "integer"},
        },
        "additionalProperties": false,
    })
}

const PAGE: &[(&str, &str, &str)] = &[
    ("plugin", "string", "only this plugin's jobs"),
    (
        "state",
        "string",
        "only jobs in this state (queued, admitted, running, succeeded, failed, cancelled, interrupted)",
    ),
    ("offset", "integer", "skip this many"),
    ("limit", "integer", "at most this many (1 to 1000)"),
];

const OK: (&str, &str) = ("200", JSON);
const ACCEPTED: (&str, &str) = ("202", JSON);

/// Every route, in the order of the README's tables.
const OPS: &[Op] = &[
    Op { method: "get", path: "/api/health", part: Part::Api, summary: "Liveness: 200 while serving, 503 while stopping (no authentication)", query: &[], body: None, answers: OK },
    Op { method: "get", path: "/api/openapi.json", part: Part::Api, summary: "This document", query: &[], body: None, answers: OK },
    Op { method: "get", path: "/api/plugins", part: Part::Api, summary: "Plugins discovered and loaded: state, where, pid, RSS, GPU memory, idle-stop time, restarts", query: &[], body: None, answers: OK },
    Op { method: "post", path: "/api/plugins/{name}/load", part: Part::Api, summary: "Load a plugin, with a configuration or as an instance", query: &[], body: Some(load_body), answers: OK },
    Op { method: "post", path: "/api/plugins/{name}/unload", part: Part::Api, summary: "Stop its worker and forget it", query: &[], body: None, answers: OK },
    Op { method: "post", path: "/api/plugins/{name}/reload", part: Part::Api, summary: "A new worker, with the configuration given or the one it had", query: &[], body: Some(config_body), answers: OK },
    Op { method: "post", path: "/api/plugins/{name}/enable", part: Part::Api, summary: "Take calls again", query: &[], body: None, answers: OK },
    Op { method: "post", path: "/api/plugins/{name}/disable", part: Part::Api, summary: "Refuse calls and loads (the worker stays)", query: &[], body: None, answers: OK },
    Op { method: "get", path: "/api/plugins/{name}/config", part: Part::Api, summary: "The configuration in force", query: &[], body: None, answers: OK },
    Op { method: "put", path: "/api/plugins/{name}/config", part: Part::Api, summary: "A partial update, checked against the schema first (422 when it fails; the old one stays)", query: &[], body: Some(config_body), answers: OK },
    Op { method: "post", path: "/api/plugins/{name}/config", part: Part::Api, summary: "As PUT, for clients that only POST", query: &[], body: Some(config_body), answers: OK },
    Op { method: "get", path: "/api/plugins/{name}/schema", part: Part::Api, summary: "The config schema its worker reports, and its fields' live options", query: &[], body: None, answers: OK },
    Op { method: "get", path: "/api/plugins/{name}/stats", part: Part::Api, summary: "Its worker's memory, CPU, GPU memory and restarts", query: &[], body: None, answers: OK },
    Op { method: "get", path: "/api/plugins/{name}/logs", part: Part::Cli, summary: "The tail of its log ({lines}), or followed as SSE", query: &[("tail", "integer", "how many lines"), ("follow", "boolean", "follow as Server-Sent Events")], body: None, answers: OK },
    Op { method: "post", path: "/api/jobs", part: Part::Api, summary: "Submit a job", query: &[], body: Some(job_body), answers: ACCEPTED },
    Op { method: "post", path: "/api/jobs/stream", part: Part::Api, summary: "Submit a streaming job (execute_stream): its chunks in the answer as they come, one JSON line each ({id}, then {chunk} per chunk, then {ended, job, result}); a client that goes away cancels it", query: &[], body: Some(job_body), answers: ("200", "application/x-ndjson") },
    Op { method: "get", path: "/api/jobs", part: Part::Api, summary: "The jobs known here, oldest first, filtered and paged", query: PAGE, body: None, answers: OK },
    Op { method: "get", path: "/api/jobs/history", part: Part::Api, summary: "The journal's jobs, newest first, filtered and paged (as cjm-ctl jobs history)", query: PAGE, body: None, answers: OK },
    Op { method: "get", path: "/api/jobs/{id}", part: Part::Api, summary: "A job's status, and the arguments it was asked with (the daemon keeps those of its latest 1000 jobs)", query: &[], body: None, answers: OK },
    Op { method: "get", path: "/api/jobs/{id}/wait", part: Part::Api, summary: "Wait for a job's end (long poll)", query: &[("timeout_ms", "integer", "how long to wait (default 30000, at most 600000)")], body: None, answers: OK },
    Op { method: "post", path: "/api/jobs/{id}/cancel", part: Part::Api, summary: "Cancel a job: cooperatively, or its worker killed", query: &[("force", "boolean", "kill its worker at once")], body: None, answers: OK },
    Op { method: "post", path: "/api/tasks", part: Part::Api, summary: "Submit a job that calls a task adapter's method", query: &[], body: Some(task_body), answers: ACCEPTED },
    Op { method: "get", path: "/api/events", part: Part::Api, summary: "Server-Sent Events: job (changes, progress), plugin (state changes, worker deaths and restarts), lagged; resumes after Last-Event-ID", query: &[], body: None, answers: ("200", "text/event-stream") },
    Op { method: "get", path: "/api/system", part: Part::Cli, summary: "CPU, memory, GPUs, and admission (queued, running, who waits for what)", query: &[], body: None, answers: OK },
    Op { method: "get", path: "/metrics", part: Part::Api, summary: "Prometheus metrics (OpenMetrics text)", query: &[], body: None, answers: ("200", "application/openmetrics-text; version=1.0.0; charset=utf-8") },
    Op { method: "get", path: "/login", part: Part::Auth, summary: "Trade a one-time token for the session cookie; redirects (303) to /", query: &[("token", "string", "the one-time token printed at start")], body: None, answers: ("303", "text/plain") },
    Op { method: "get", path: "/", part: Part::Dash, summary: "The dashboard", query: &[], body: None, answers: ("200", "text/html") },
    Op { method: "get", path: "/assets/{name}", part: Part::Dash, summary: "The dashboard's files: app.js, chart.js, detail.js, app.css, icon.svg", query: &[], body: None, answers: ("200", "text/javascript") },
    Op { method: "get", path: "/api/jobs/{id}/diagnostics", part: Part::Dash, summary: "A job's log records, oldest first, read on after a cursor: {job, records, last_seq, dropped}", query: &[("after_seq", "integer", "the last record already read"), ("limit", "integer", "at most this many (default 200, 1 to 5000)")], body: None, answers: OK },
];

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error", "category", "detail"],
        "properties": {
            "error": {"type": "string", "description": "a short, stable name: invalid_json, unknown_plugin, .."},
            "category": {"type": "string", "enum": ["user_input", "transient", "resource", "fatal"]},
            "detail": {"type": "string", "description": "what was wrong with which input"},
        },
    })
}

fn operation(op: &Op) -> Value {
    let mut parameters: Vec<Value> = op
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": {"type": "string"},
            })
        })
        .collect();
    parameters.extend(op.query.iter().map(|(name, kind, description)| {
        json!({
            "name": name,
            "in": "query",
            "required": false,
            "description": description,
            "schema": {"type": kind},
        })
    }));
    let (status, content_type) = op.answers;
    let mut responses = Map::new();
    responses.insert(
        status.to_owned(),
        json!({"description": "done", "content": {content_type: {}}}),
    );
    responses.insert(
        String::from("default"),
        json!({
            "description": "refused or failed: {error, category, detail}",
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
        }),
    );
    let mut value = json!({
        "summary": op.summary,
        "operationId": format!("{} {}", op.method, op.path),
        "parameters": parameters,
        "responses": responses,
        "x-cjm-part": format!("{:?}", op.part).to_lowercase(),
    });
    if let (Some(body), Value::Object(map)) = (op.body, &mut value) {
        map.insert(
            String::from("requestBody"),
            json!({"required": false, "content": {JSON: {"schema": body()}}}),
        );
    }
    value
}

/// The document.
pub(crate) fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut paths = Map::new();
        for op in OPS {
            let entry = paths
                .entry(op.path.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(methods) = entry {
                methods.insert(op.method.to_owned(), operation(op));
            }
        }
        json!({
            "openapi": "3.1.0",
            "info": {
                "title": "cjm-ctl serve",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "A long-lived cjm host: plugins, jobs, events and metrics. Over TCP every route but /api/health needs a bearer token or the session cookie; the Unix socket needs none.",
            },
            "paths": paths,
            "components": {
                "schemas": {"Error": error_schema()},
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer"},
                    "cookie": {"type": "apiKey", "in": "cookie", "name": "cjm_session"},
                },
            },
            "security": [{"bearer": []}, {"cookie": []}],
        })
    })
}

/// `GET /api/openapi.json`.
pub(crate) fn serve() -> Response<Body> {
    body::json(StatusCode::OK, document())
}

/// Every documented route: its method (upper case), its path, and whether another
/// part serves it (see [`OTHER_PARTS`]).
#[cfg(test)]
pub(crate) fn routes() -> impl Iterator<Item = (String, &'static str, bool)> {
    OPS.iter().map(|op| {
        (
            op.method.to_uppercase(),
            op.path,
            OTHER_PARTS.contains(&op.part),
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// A path's segments as the router sees them, with `x` for each parameter.
    fn segments(path: &str) -> Vec<String> {
        path.trim_matches('/')
            .split('/')
            .map(|segment| match segment.starts_with('{') {
                true => String::from("x"),
                false => segment.to_owned(),
            })
            .collect()
    }

    /// The arms of `allowed()` as written in api.rs: each pattern (slots of
    /// alternatives, `None` for `_`) and the methods it answers.
    fn arms_of_allowed() -> Vec<(Vec<Option<Vec<String>>>, String)> {
        let source = include_str!("api.rs");
        let start = source.find("fn allowed(").expect("api.rs has allowed()");
        let body = &source[start..];
        let body = &body[..body.find("\n}\n").expect("allowed() ends")];
        // The arms, after the signature's own brackets.
        let body = &body[body.find("match").expect("allowed() matches")..];
        let parts: Vec<&str> = body.split("=>").collect();
        let mut arms = Vec::new();
        for pair in parts.windows(2) {
            let (patterns, after) = (pair[0], pair[1]);
            let Some(methods) = after
                .trim_start()
                .strip_prefix("Some(\"")
                .and_then(|rest| rest.split('"').next())
            else {
                continue;
            };
            let mut rest = patterns;
            while let Some(open) = rest.find('[') {
                let close = rest[open..].find(']').expect("a pattern closes") + open;
                let slots = rest[open + 1..close]
                    .split(',')
                    .map(str::trim)
                    .filter(|slot| !slot.is_empty())
                    .map(|slot| match slot {
                        "_" => None,
                        slot => Some(
                            slot.split('|')
                                .map(|word| word.trim().trim_matches('"').to_owned())
                                .collect(),
                        ),
                    })
                    .collect();
                arms.push((slots, methods.to_owned()));
                rest = &rest[close + 1..];
            }
        }
        arms
    }

    fn documented() -> BTreeMap<&'static str, BTreeSet<String>> {
        let mut paths: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (method, path, _) in routes() {
            paths.entry(path).or_default().insert(method);
        }
        paths
    }

    #[test]
    fn every_arm_of_the_router_is_documented_with_its_methods() {
        let arms = arms_of_allowed();
        assert!(arms.len() >= 10, "{} arms read from api.rs", arms.len());
        let documented = documented();
        for (slots, methods) in &arms {
            // Each expansion of the arm's alternatives is a documented path.
            let mut expansions: Vec<Vec<String>> = vec![Vec::new()];
            for slot in slots {
                let words = slot.clone().unwrap_or_else(|| vec![String::from("x")]);
                expansions = expansions
                    .iter()
                    .flat_map(|prefix| {
                        words.iter().map(move |word| {
                            let mut next = prefix.clone();
                            next.push(word.clone());
                            next
                        })
                    })
                    .collect();
            }
            let want: BTreeSet<String> = methods.split(", ").map(str::to_owned).collect();
            for expansion in expansions {
                let candidates: Vec<(&&str, &BTreeSet<String>)> = documented
                    .iter()
                    .filter(|(path, _)| {
                        let documented = segments(path);
                        documented.len() == expansion.len()
                            && documented
                                .iter()
                                .zip(&expansion)
                                .all(|(doc, arm)| doc == arm)
                    })
                    .collect();
                assert!(
                    !candidates.is_empty(),
                    "/{} (allowed: {methods}) is not in the OpenAPI document",
                    expansion.join("/")
                );
                for (path, got) in candidates {
                    assert_eq!(
                        got, &want,
                        "{path}: documented {got:?}, the router takes {methods}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_documented_route_of_this_build_is_an_arm_of_the_router() {
        for (method, path, elsewhere) in routes() {
            if elsewhere {
                continue;
            }
            let owned = segments(path);
            let words: Vec<&str> = owned.iter().map(String::as_str).collect();
            let allowed = crate::api::allowed(&words)
                .unwrap_or_else(|| panic!("{method} {path} is documented but no route"));
            assert!(
                allowed.split(", ").any(|taken| taken == method),
                "{method} {path}: the router takes {allowed}"
            );
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_an_operation_per_route() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        let operations: usize = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|methods| methods.as_object().unwrap().len())
            .sum();
        assert_eq!(operations, OPS.len());
        let ids: BTreeSet<&str> = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|methods| methods.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), OPS.len(), "operation ids are unique");
        let config = &document["paths"]["/api/plugins/{name}/config"]["put"];
        assert_eq!(config["parameters"][0]["name"], "name");
        assert_eq!(config["parameters"][0]["in"], "path");
    }
}
