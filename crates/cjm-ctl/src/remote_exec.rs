//! `exec` and `task` through a daemon: the plugin loaded there if it is not (and
//! left loaded, so that the next call finds its model in memory), the call submitted
//! as a job, its progress and block reasons read from the daemon's events, Ctrl-C a
//! cancel on the daemon, the result and the exit status as in-process.

use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use cjm_daemon::{ClientError, DaemonClient, EventStream};
use cjm_manager::jobs::Cancellation;
use cjm_manager::{ConfigMap, ErrorCategory};
use serde_json::{json, Map, Value};

use crate::job_ui::{Ended, Interrupts, ProgressDisplay, CANCELLING};
use crate::out::outln;

/// A call for the daemon to run.
pub(crate) struct RemoteCall {
    pub(crate) plugin: String,
    pub(crate) args: Vec<Value>,
    pub(crate) kwargs: Map<String, Value>,
    /// A task adapter's (task, method), for `cjm-ctl task`.
    pub(crate) task: Option<(String, String)>,
    /// Used when the daemon has to load the plugin.
    pub(crate) config: Option<ConfigMap>,
}

/// How long one long poll of the job's end lasts before it is asked again.
const WAIT_POLL_MS: u64 = 30_000;

pub(crate) fn run(client: DaemonClient, call: RemoteCall, stream: bool) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Before anything is asked of the daemon: a Ctrl-C from here on is a cancel.
        let mut interrupts = Interrupts::new()?;
        let ended = match load(&client, &call, &mut interrupts).await {
            Err(ended) => ended,
            Ok(()) if stream => stream_job(&client, &call, &mut interrupts).await,
            Ok(()) => run_job(&client, &call, &mut interrupts).await,
        };
        Ok(ended.report())
    })
}

/// `exec --stream` through the daemon: the chunks printed one JSON line each as the
/// daemon passes them on (`POST /api/jobs/stream`), Ctrl-C a cancel there, the exit
/// status as in-process. A closed stdout closes the stream, which cancels the job.
async fn stream_job(
    client: &DaemonClient,
    call: &RemoteCall,
    interrupts: &mut Interrupts,
) -> Ended {
    let broke = |err: anyhow::Error| Ended::failed(Some(ErrorCategory::Transient), err);
    let body = json!({"plugin": call.plugin, "args": call.args, "kwargs": call.kwargs});
    let mut lines = match client.post_lines("/api/jobs/stream", &body).await {
        Ok(lines) => lines,
        Err(err) => return failed(err),
    };
    let id = match lines.next().await {
        Some(Ok(first)) => match first["id"].as_u64() {
            Some(id) => id,
            None => return Ended::failed(None, anyhow!("the daemon gave no job id: {first}")),
        },
        Some(Err(err)) => return broke(err.into()),
        None => return broke(anyhow!("the daemon ended the stream before the job began")),
    };
    loop {
        tokio::select! {
            line = lines.next() => match line {
                Some(Ok(line)) => {
                    if let Some(chunk) = line.get("chunk") {
                        let text = match serde_json::to_string(chunk) {
                            Ok(text) => text,
                            Err(err) => return Ended::failed(None, err),
                        };
                        if let Err(err) = outln!("{text}") {
                            // Nobody reads on: closing the stream cancels the job.
                            drop(lines);
                            return Ended::unprinted(err);
                        }
                    } else if line["ended"] == true {
                        return ended_as(id, &line, false);
                    } else if line.get("ended").is_some() {
                        let detail = line["detail"].as_str().unwrap_or("its end is unknown");
                        return broke(anyhow!("job {id}: {detail}"));
                    }
                }
                Some(Err(err)) => return broke(err.into()),
                None => return broke(anyhow!("the daemon's stream of job {id} ended before the job")),
            },
            seen = interrupts.next() => {
                let path = match seen {
                    1 => {
                        eprintln!("{CANCELLING}");
                        format!("/api/jobs/{id}/cancel")
                    }
                    _ => {
                        eprintln!("cjm-ctl: forcing: killing the worker");
                        format!("/api/jobs/{id}/cancel?force=true")
                    }
                };
                if let Err(err) = client.post(&path, None).await {
                    tracing::warn!("cancelling job {id}: {err}");
                }
            }
        }
    }
}

fn failed(err: ClientError) -> Ended {
    Ended::failed(err.category(), err)
}

/// Load the plugin in the daemon unless it is loaded already.
async fn load(
    client: &DaemonClient,
    call: &RemoteCall,
    interrupts: &mut Interrupts,
) -> Result<(), Ended> {
    let path = format!("/api/plugins/{}/load", call.plugin);
    let body = call
        .config
        .as_ref()
        .map(|config| json!({ "config": config }));
    let loaded = tokio::select! {
        loaded = client.post(&path, body.as_ref()) => loaded,
        // The daemon finishes the load on its own; the plugin stays loaded there.
        _ = interrupts.next() => return Err(Ended::Cancelled { how: None }),
    };
    match loaded {
        Ok(_) => Ok(()),
        Err(err) if err.api_error() == Some("already_loaded") => {
            if call.config.is_some() {
                // Said, not hidden: the call runs with the configuration it was
                // loaded with.
                eprintln!(
                    "cjm-ctl: plugin {} is loaded in the daemon already: --config applies \
                     only when it loads, and was not used",
                    call.plugin
                );
            }
            Ok(())
        }
        Err(err) if err.api_error() == Some("unknown_plugin") => {
            let category = err.category();
            let hint = format!(
                "the daemon at {} does not know plugin {} (it reads the manifests when it \
                 starts: one installed since is known after a restart; --local runs it here)",
                client.socket().display(),
                call.plugin
            );
            Err(Ended::failed(
                category,
                anyhow::Error::new(err).context(hint),
            ))
        }
        Err(err) => Err(failed(err)),
    }
}

async fn run_job(client: &DaemonClient, call: &RemoteCall, interrupts: &mut Interrupts) -> Ended {
    // Subscribed before the job exists, so that no early report is missed.
    let mut events = match client.events("/api/events", None).await {
        Ok(events) => Some(events),
        Err(err) => {
            tracing::debug!("no events from the daemon: {err}");
            None
        }
    };
    let mut body = json!({
        "plugin": call.plugin,
        "args": call.args,
        "kwargs": call.kwargs,
    });
    if let Some((task, method)) = &call.task {
        body["task"] = json!({"task": task, "method": method});
    }
    let id = match client.post("/api/jobs", Some(&body)).await {
        Ok(answer) => match answer["id"].as_u64() {
            Some(id) => id,
            None => return Ended::failed(None, anyhow!("the daemon gave no job id: {answer}")),
        },
        Err(err) => return failed(err),
    };
    let mut progress = ProgressDisplay::new();
    let outcome = {
        let wait = wait(client, id);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                outcome = &mut wait => break outcome,
                event = next_event(&mut events), if events.is_some() => {
                    let Some(data) = event else { events = None; continue };
                    if data["job"] != id {
                        continue;
                    }
                    match data["change"].as_str() {
                        Some("progress") => progress.show(
                            data["fraction"].as_f64().unwrap_or(-1.0),
                            data["message"].as_str().unwrap_or_default(),
                        ),
                        Some("blocked") => {
                            if let Some(reason) = data["reason"].as_str() {
                                progress.suspend(|| eprintln!("cjm-ctl: waiting: {reason}"));
                            }
                        }
                        _ => {}
                    }
                }
                seen = interrupts.next() => {
                    progress.suspend(|| {
                        if seen == 1 {
                            eprintln!("{CANCELLING}");
                        } else {
                            eprintln!("cjm-ctl: forcing: killing the worker");
                        }
                    });
                    let path = match seen {
                        1 => format!("/api/jobs/{id}/cancel"),
                        _ => format!("/api/jobs/{id}/cancel?force=true"),
                    };
                    if let Err(err) = client.post(&path, None).await {
                        tracing::warn!("cancelling job {id}: {err}");
                    }
                }
            }
        }
    };
    progress.finish();
    match outcome {
        Ok(outcome) => ended_as(id, &outcome, true),
        Err(err) => failed(err),
    }
}

/// The data of the next event, `None` when the stream ended or there is none.
async fn next_event(events: &mut Option<EventStream>) -> Option<Value> {
    let stream = events.as_mut()?;
    loop {
        match stream.next().await? {
            Ok(event) if event.kind == "job" => match serde_json::from_str(&event.data) {
                Ok(data) => return Some(data),
                Err(err) => tracing::debug!("an event that is not JSON: {err}"),
            },
            Ok(_) => {}
            Err(err) => {
                tracing::debug!("the daemon's events ended: {err}");
                return None;
            }
        }
    }
}

/// The job's end, long poll after long poll: `{ended: true, job, result}`.
async fn wait(client: &DaemonClient, id: u64) -> Result<Value, ClientError> {
    let path = format!("/api/jobs/{id}/wait?timeout_ms={WAIT_POLL_MS}");
    loop {
        let answer = client.get(&path).await?;
        if answer["ended"] == true {
            return Ok(answer);
        }
    }
}

/// How the command ends for a job that ended as `outcome` says, as
/// [`crate::exec`]'s in-process jobs end; the result printed when `print_result`
/// (a stream's chunks were its output).
fn ended_as(id: u64, outcome: &Value, print_result: bool) -> Ended {
    let job = &outcome["job"];
    match job["state"].as_str() {
        Some("succeeded") if !print_result => Ended::Done,
        Some("succeeded") => {
            let result = outcome.get("result").cloned().unwrap_or(Value::Null);
            match serde_json::to_string_pretty(&result) {
                Ok(text) => match outln!("{text}") {
                    Ok(()) => Ended::Done,
                    Err(err) => Ended::unprinted(err),
                },
                Err(err) => Ended::failed(None, err),
            }
        }
        Some("cancelled") => Ended::Cancelled {
            how: match job["cancelled"].as_str() {
                Some("forced") => Some(Cancellation::Forced),
                Some("abandoned") => Some(Cancellation::Abandoned),
                Some("cooperative") => Some(Cancellation::Cooperative),
                Some("queued") => Some(Cancellation::WhileQueued),
                _ => None,
            },
        },
        state => {
            let failure = &job["failure"];
            match failure["message"].as_str() {
                Some(message) => Ended::failed(
                    failure["category"]
                        .as_str()
                        .and_then(ErrorCategory::from_name),
                    anyhow!("{message}"),
                ),
                None => Ended::failed(
                    None,
                    anyhow!("job {id} ended {}", state.unwrap_or("in no known state")),
                ),
            }
        }
    }
}
