//! The routes, by hand: a dozen of them, matched on the method and the path's
//! segments. Every failure becomes a JSON error; nothing a request carries can panic
//! a handler (its values are checked, never unwrapped).

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::auth::{Gate, Via};
use crate::body::{self, Body};
use crate::dashboard;
use crate::diagnostics_api;
use crate::events;
use crate::jobs_api;
use crate::jobs_query;
use crate::logs_api;
use crate::metrics;
use crate::openapi;
use crate::plugin_verbs;
use crate::plugins_api;
use crate::problem::ApiError;
use crate::state::Shared;
use crate::stream_api;
use crate::system_api;
use crate::tasks_api;

/// Answer one request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    via: Via,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if let Gate::Answer(response) = shared.auth.gate(via, &request) {
        tracing::debug!("{method} {path}: {} (auth)", response.status().as_u16());
        return Ok(response);
    }
    let response = match route(shared, request).await {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(
                "{method} {path}: {} {} ({})",
                err.status.as_u16(),
                err.error,
                err.detail
            );
            err.response()
        }
    };
    Ok(response)
}

async fn route(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let request_query = request.uri().query().map(str::to_owned);
    let request_query = request_query.as_deref();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = method == Method::GET;
    let post = method == Method::POST;
    let put = method == Method::PUT;
    match segments.as_slice() {
        ["api", "health"] if get => Ok(health(&shared)),
        [""] if get => Ok(dashboard::page()),
        ["assets", name] if get => dashboard::asset(name),
        // Over TCP the gate answers `/login` before routing; a client of the Unix
        // socket needs no login, so it is sent straight on.
        ["login"] if get => Ok(logged_in_already()),
        ["api", "plugins"] if get => Ok(plugins_api::list(&shared)),
        ["api", "plugins", name, "load"] if post => {
            let name = (*name).to_owned();
            plugins_api::load(shared, name, request).await
        }
        ["api", "plugins", name, "unload"] if post => {
            let name = (*name).to_owned();
            plugins_api::unload(shared, name).await
        }
        ["api", "system"] if get => Ok(system_api::system(&shared).await),
        ["api", "plugins", name, "logs"] if get => logs_api::logs(&shared, name, request_query),
        ["api", "plugins", name, "reload"] if post => {
            plugin_verbs::reload(shared, (*name).to_owned(), request).await
        }
        ["api", "plugins", name, "enable"] if post => {
            plugin_verbs::set_enabled(shared, (*name).to_owned(), true).await
        }
        ["api", "plugins", name, "disable"] if post => {
            plugin_verbs::set_enabled(shared, (*name).to_owned(), false).await
        }
        ["api", "plugins", name, "config"] if get => {
            plugin_verbs::get_config(shared, (*name).to_owned()).await
        }
        ["api", "plugins", name, "config"] if put || post => {
            plugin_verbs::put_config(shared, (*name).to_owned(), request).await
        }
        ["api", "plugins", name, "schema"] if get => {
            plugin_verbs::schema(shared, (*name).to_owned()).await
        }
        ["api", "plugins", name, "stats"] if get => {
            plugin_verbs::stats(shared, (*name).to_owned()).await
        }
        ["api", "tasks"] if post => tasks_api::submit(shared, request).await,
        ["api", "jobs", "history"] if get => {
            jobs_query::journal_history(shared, request_query).await
        }
        ["api", "openapi.json"] if get => Ok(openapi::serve()),
        ["api", "jobs"] if post => jobs_api::submit(shared, request).await,
        ["api", "jobs", "stream"] if post => stream_api::submit(shared, request).await,
        ["api", "jobs"] if get => jobs_query::list(&shared, request_query),
        ["api", "jobs", id] if get => jobs_api::get(&shared, id),
        ["api", "jobs", id, "wait"] if get => {
            jobs_api::wait(shared.clone(), id, request_query).await
        }
        ["api", "jobs", id, "cancel"] if post => jobs_api::cancel(&shared, id, request_query),
        ["api", "jobs", id, "diagnostics"] if get => {
            diagnostics_api::diagnostics(shared.clone(), id, request_query).await
        }
        ["api", "events"] if get => {
            let last_event_id = request
                .headers()
                .get("last-event-id")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            Ok(events::stream(
                Arc::clone(&shared.events),
                last_event_id,
                shared.closing.subscribe(),
            ))
        }
        ["metrics"] if get => match shared.metrics.render(&shared.manager, &shared.jobs) {
            Ok(text) => Ok(body::with_type(StatusCode::OK, text, metrics::CONTENT_TYPE)),
            Err(_) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed",
                cjm_manager::ErrorCategory::Fatal,
                "the metrics could not be written",
            )),
        },
        known if allowed(known).is_some() => {
            let allow = allowed(known).unwrap_or("");
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                cjm_manager::ErrorCategory::UserInput,
                format!("{method} {path}: this route takes {allow}"),
            )
            .response();
            response
                .headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
            Ok(response)
        }
        _ => Err(ApiError::not_found(
            "no_such_route",
            format!("{method} {path}: no such route (see the README's \"The daemon\")"),
        )),
    }
}

/// The methods a known route takes; `None` for a path that is no route (its arms are
/// held to the OpenAPI document by `openapi.rs`'s tests).
pub(crate) fn allowed(segments: &[&str]) -> Option<&'static str> {
    match segments {
        ["api", "health"] | ["api", "plugins"] | ["api", "events"] | ["metrics"] | ["login"] => {
            Some("GET")
        }
        ["api", "jobs"] => Some("GET, POST"),
        ["api", "jobs", "stream"] => Some("POST"),
        [""] | ["assets", _] => Some("GET"),
        ["api", "system"] | ["api", "plugins", _, "logs"] => Some("GET"),
        ["api", "jobs", _] | ["api", "jobs", _, "wait"] => Some("GET"),
        ["api", "jobs", _, "diagnostics"] => Some("GET"),
        ["api", "plugins", _, "load" | "unload"] | ["api", "jobs", _, "cancel"] => Some("POST"),
        ["api", "plugins", _, "reload" | "enable" | "disable"] | ["api", "tasks"] => Some("POST"),
        ["api", "plugins", _, "config"] => Some("GET, PUT, POST"),
        ["api", "plugins", _, "schema" | "stats"] | ["api", "openapi.json"] => Some("GET"),
        _ => None,
    }
}

/// `GET /login` over the Unix socket: on to the dashboard, no cookie needed.
fn logged_in_already() -> Response<Body> {
    let mut response = body::with_type(StatusCode::SEE_OTHER, "", "text/plain");
    response
        .headers_mut()
        .insert(hyper::header::LOCATION, HeaderValue::from_static("/"));
    response
}

/// `GET /api/health`: 200 while serving, 503 while stopping.
fn health(shared: &Shared) -> Response<Body> {
    let draining = shared.is_draining();
    let status = match draining {
        true => StatusCode::SERVICE_UNAVAILABLE,
        false => StatusCode::OK,
    };
    body::json(
        status,
        &json!({
            "status": if draining { "stopping" } else { "ok" },
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_s": shared.started.elapsed().as_secs(),
            "session": shared.jobs.session(),
            "plugins_loaded": shared.manager.list_plugins().len(),
            "jobs_queued": shared.jobs.queued(),
        }),
    )
}
