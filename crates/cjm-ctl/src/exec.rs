use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use cjm_manager::jobs::{
    JobChange, JobEvent, JobId, JobOptions, JobOutcome, JobState, Jobs, JobsError, TaskCall,
};
use cjm_manager::{
    CallArgs, ConfigMap, ErrorCategory, ManagerError, ManagerOptions, PluginManager, ProxyError,
};
use serde_json::Value;

use crate::job_ui::{Ended, Interrupts, ProgressDisplay, CANCELLING};
use crate::out::outln;
use crate::remote_exec::RemoteCall;

/// Load a plugin, run it once, print the result as JSON and stop it. Progress goes to
/// stderr (a bar on a terminal); Ctrl-C cancels, a second Ctrl-C forces. Exit status:
/// 0 ok, 65 user_input, 69 resource, 70 fatal, 75 transient, 130 cancelled, 141 stdout
/// closed (as by SIGPIPE: `| head`), 1 other. When a daemon serves CJM_HOME
/// (`cjm-ctl serve`), the call runs there and the plugin stays loaded; --local runs it
/// here.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "exec")]
pub struct ExecCommand {
    /// name of the plugin
    #[argh(positional)]
    name: String,
    /// positional arguments, a JSON array (e.g. '["hello", 2]')
    #[argh(option)]
    args: Option<String>,
    /// keyword arguments, a JSON object (e.g. '{"repeat": 2}')
    #[argh(option)]
    kwargs: Option<String>,
    /// initial configuration, a JSON object
    #[argh(option)]
    config: Option<String>,
    /// stream the results: one JSON line per chunk
    #[argh(switch)]
    stream: bool,
    /// run in this process even when a daemon serves CJM_HOME
    #[argh(switch)]
    local: bool,
}

pub fn run(command: ExecCommand) -> Result<ExitCode> {
    let args = match &command.args {
        Some(text) => match parse_json("--args", text)? {
            Value::Array(args) => args,
            other => bail!("--args must be a JSON array, got {other}"),
        },
        None => Vec::new(),
    };
    let kwargs = parse_object("--kwargs", command.kwargs.as_deref())?;
    let config = match command.config.as_deref() {
        Some(text) => Some(parse_object("--config", Some(text))?),
        None => None,
    };
    if let Some(client) = crate::daemon_link::find(command.local)? {
        let call = RemoteCall {
            plugin: command.name,
            args,
            kwargs,
            task: None,
            config,
        };
        return crate::remote_exec::run(client, call, command.stream);
    }
    let call = CallArgs::from_json(args, kwargs);
    let what = match command.stream {
        true => Submit::Stream(call),
        false => Submit::Plain(call),
    };
    run_as_job(&command.name, config, what)
}

/// What a command runs as a job.
pub(crate) enum Submit {
    /// `execute`.
    Plain(CallArgs),
    /// `execute_stream`, one JSON line per chunk.
    Stream(CallArgs),
    /// A task adapter's method (`/task`).
    Task(TaskCall, CallArgs),
}

/// Load plugin `name` (with `config`), run `what` as a job with its progress shown
/// and Ctrl-C as a cancel, print the result, stop the plugin: the exit status says
/// how it ended (see [`ExecCommand`]).
pub(crate) fn run_as_job(name: &str, config: Option<ConfigMap>, what: Submit) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let manager = PluginManager::new(ManagerOptions::from_env()?);
        manager.discover_manifests();
        let found = manager.discovery();
        if !found.plugins.iter().any(|plugin| plugin.meta.name == name) {
            // "not found" would be wrong when its manifest is there but broken.
            if let Some(problem) = found
                .problems
                .iter()
                .find(|problem| problem.path.file_stem() == Some(name.as_ref()))
            {
                bail!(
                    "plugin {}: its manifest {} cannot be used: {}",
                    name,
                    problem.path.display(),
                    problem.reason
                );
            }
        }
        for problem in &found.problems {
            tracing::warn!("skipped manifest {problem}");
        }
        // Signals are taken over before anything starts, so that a Ctrl-C during the
        // load is a cancel too, never a host killed with its worker half started.
        let mut interrupts = Interrupts::new()?;
        // The jobs first: a worker started after them knows where its job's log
        // records go (the original's Python worker writes them itself).
        let ended = match Jobs::new(manager.clone(), JobOptions::default()).await {
            Err(err) => Ended::failed(None, err),
            Ok(jobs) => match load(&manager, name, config, &mut interrupts).await {
                Err(ended) => ended,
                Ok(()) => match what {
                    Submit::Stream(call) => run_stream(&jobs, name, call, &mut interrupts).await,
                    what => run_job(&jobs, name, what, &mut interrupts).await,
                },
            },
        };
        manager.shutdown().await;
        Ok(ended.report())
    })
}

/// The category a failed load exits by. A worker that cannot be started at all (its
/// program missing or not executable) is a broken installation, not a plugin's
/// failure: it exits 1 with the manifest's other faults, not 70.
fn load_category(err: &ManagerError) -> Option<ErrorCategory> {
    match err {
        ManagerError::Plugin(ProxyError::Spawn { .. }) => None,
        other => other.category(),
    }
}

async fn load(
    manager: &PluginManager,
    name: &str,
    config: Option<ConfigMap>,
    interrupts: &mut Interrupts,
) -> Result<(), Ended> {
    tokio::select! {
        loaded = manager.load_plugin(name, config) => {
            loaded.map_err(|err| Ended::failed(load_category(&err), err))
        }
        // Nothing of the plugin's ran yet: the shutdown that follows stops its worker.
        _ = interrupts.next() => Err(Ended::Cancelled { how: None }),
    }
}

/// A plain call, as a job: its progress is shown, and it can be cancelled.
async fn run_job(jobs: &Jobs, plugin: &str, what: Submit, interrupts: &mut Interrupts) -> Ended {
    // Subscribed before the job exists, so that no early report is missed.
    let mut events = jobs.events();
    let submitted = match what {
        Submit::Task(task, call) => jobs.submit_task(plugin, task, call, 0),
        Submit::Plain(call) | Submit::Stream(call) => jobs.submit(plugin, call, 0),
    };
    let id = match submitted {
        Ok(id) => id,
        Err(err) => return Ended::failed(None, err),
    };
    let mut progress = ProgressDisplay::new();
    let outcome = {
        let wait = jobs.wait(id);
        tokio::pin!(wait);
        let mut events_open = true;
        loop {
            tokio::select! {
                outcome = &mut wait => break outcome,
                event = events.next(), if events_open => match event {
                    Some(Ok(JobEvent { job, change: JobChange::Progress { fraction, message }, .. }))
                        if job == id => progress.show(fraction, &message),
                    Some(Ok(JobEvent { job, change: JobChange::Blocked(Some(reason)), .. }))
                        if job == id => progress.suspend(|| eprintln!("cjm-ctl: waiting: {reason}")),
                    Some(_) => {}
                    None => events_open = false,
                },
                seen = interrupts.next() => {
                    progress.suspend(|| {
                        if seen == 1 {
                            eprintln!("{CANCELLING}");
                        } else {
                            eprintln!("cjm-ctl: forcing: killing the worker");
                        }
                    });
                    let cancelled = if seen == 1 { jobs.cancel(id) } else { jobs.cancel_now(id) };
                    if let Err(err) = cancelled {
                        tracing::warn!("{err}");
                    }
                }
            }
        }
    };
    progress.finish();
    jobs.shutdown().await;
    ended_as(id, outcome, true)
}

/// How `exec` ends for a job that ended with `outcome`; its result printed when asked.
fn ended_as(id: JobId, outcome: Result<JobOutcome, JobsError>, print_result: bool) -> Ended {
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(err) => return Ended::failed(None, err),
    };
    match outcome.status.state {
        JobState::Succeeded if !print_result => Ended::Done,
        JobState::Succeeded => {
            match serde_json::to_string_pretty(&outcome.result.unwrap_or(Value::Null)) {
                Ok(text) => match outln!("{text}") {
                    Ok(()) => Ended::Done,
                    Err(err) => Ended::unprinted(err),
                },
                Err(err) => Ended::failed(None, err),
            }
        }
        JobState::Cancelled => Ended::Cancelled {
            how: outcome.status.cancelled,
        },
        _ => match outcome.status.failure {
            Some(failure) => {
                Ended::failed(Some(failure.category), anyhow::anyhow!(failure.message))
            }
            None => Ended::failed(
                None,
                anyhow::anyhow!("job {id} ended {}", outcome.status.state.as_str()),
            ),
        },
    }
}

/// A streamed call, as a job (so it is in the journal too): one JSON line per chunk
/// on stdout. The first Ctrl-C cancels the job (the worker is asked to stop the
/// stream, and forced after the cancel timeout); the second forces at once. A closed
/// stdout cancels it and ends quietly.
async fn run_stream(
    jobs: &Jobs,
    plugin: &str,
    call: CallArgs,
    interrupts: &mut Interrupts,
) -> Ended {
    let (id, mut chunks) = match jobs.submit_stream(plugin, call, 0) {
        Ok(submitted) => submitted,
        Err(err) => return Ended::failed(None, err),
    };
    let cancel = |seen: usize| {
        let cancelled = if seen > 1 {
            eprintln!("cjm-ctl: forcing: killing the worker");
            jobs.cancel_now(id)
        } else {
            eprintln!("{CANCELLING}");
            jobs.cancel(id)
        };
        if let Err(err) = cancelled {
            tracing::warn!("{err}");
        }
    };
    let mut unprinted = None;
    loop {
        tokio::select! {
            chunk = chunks.next() => {
                let Some(chunk) = chunk else { break };
                let printed = match serde_json::to_string(&chunk) {
                    Ok(line) => outln!("{line}"),
                    Err(err) => {
                        let _ = jobs.cancel(id);
                        jobs.shutdown().await;
                        return Ended::failed(None, err);
                    }
                };
                if let Err(err) = printed {
                    // Nobody reads on: the call's work would go nowhere. Dropping the
                    // chunks cancels the job, and the plugin is told.
                    unprinted = Some(err);
                    break;
                }
            },
            seen = interrupts.next() => cancel(seen),
        }
    }
    drop(chunks);
    let outcome = {
        let wait = jobs.wait(id);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                outcome = &mut wait => break outcome,
                seen = interrupts.next() => cancel(seen.max(2)),
            }
        }
    };
    jobs.shutdown().await;
    match unprinted {
        Some(err) => Ended::unprinted(err),
        None => ended_as(id, outcome, false),
    }
}

fn parse_json(flag: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{flag} is not valid JSON: {text}"))
}

pub(crate) fn parse_object(flag: &str, text: Option<&str>) -> Result<ConfigMap> {
    match text {
        None => Ok(ConfigMap::new()),
        Some(text) => match parse_json(flag, text)? {
            Value::Object(map) => Ok(map),
            other => bail!("{flag} must be a JSON object, got {other}"),
        },
    }
}
