//! Plugin and worker events onto the event stream (`event: plugin`) and into the
//! metrics: what the manager broadcasts (loads, unloads, enable and disable, reloads,
//! workers started, dead, restarted, stopped idle, evicted), numbered in the same
//! buffer as the job events, so `Last-Event-ID` resumes both.

use std::sync::Arc;

use cjm_manager::PluginEvent;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::events::until_closing;
use crate::state::Shared;

/// An event's data: `{name, state, pid?, detail?}`.
pub(crate) fn plugin_event(event: &PluginEvent) -> Value {
    let mut data = Map::new();
    data.insert(String::from("name"), Value::from(event.name.clone()));
    data.insert(String::from("state"), Value::from(event.change.as_str()));
    if let Some(pid) = event.pid {
        data.insert(String::from("pid"), Value::from(pid));
    }
    if let Some(detail) = &event.detail {
        data.insert(String::from("detail"), Value::from(detail.clone()));
    }
    Value::Object(data)
}

/// Feed the event log and the metrics from `events` (subscribed before the daemon
/// loaded its plugins, so that those loads are told too), until the manager is gone
/// or the daemon closes.
pub(crate) async fn collect(shared: Arc<Shared>, mut events: broadcast::Receiver<PluginEvent>) {
    let mut closing = shared.closing.subscribe();
    loop {
        let next = tokio::select! {
            next = events.recv() => next,
            _ = until_closing(&mut closing) => return,
        };
        match next {
            Ok(event) => {
                shared.metrics.plugins.observe(&event);
                shared.events.push("plugin", &plugin_event(&event));
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!("the daemon fell {missed} plugin event(s) behind");
                shared.metrics.missed(missed);
                shared.events.push(
                    "lagged",
                    &json!({"missed": missed, "detail": "plugin events the daemon fell too far behind to see"}),
                );
            }
            Err(RecvError::Closed) => return,
        }
    }
}
