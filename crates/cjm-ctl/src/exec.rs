use std::process::ExitCode;

use std::io::IsTerminal;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use cjm_manager::jobs::{
    Cancellation, JobChange, JobEvent, JobId, JobOptions, JobOutcome, JobState, Jobs, JobsError,
    TaskCall,
};
use cjm_manager::{
    CallArgs, ConfigMap, ErrorCategory, ManagerError, ManagerOptions, PluginManager, ProxyError,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::out::{outln, OutError};
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
    /// stream the results: one JSON line per chunk (always in-process: the daemon's
    /// API has no chunk stream)
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
    if !command.stream {
        if let Some(client) = crate::daemon_link::find(command.local)? {
            let call = RemoteCall {
                plugin: command.name,
                args,
                kwargs,
                task: None,
                config,
            };
            return crate::remote_exec::run(client, call);
        }
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

/// How `exec` ended, and so its exit status.
pub(crate) enum Ended {
    Done,
    Failed {
        category: Option<ErrorCategory>,
        error: anyhow::Error,
    },
    Cancelled {
        /// How, where it was more than asking.
        how: Option<Cancellation>,
    },
    /// Stdout's reader went away (`| head`): nothing to say, nowhere to say it.
    StdoutClosed,
}

impl Ended {
    pub(crate) fn failed(category: Option<ErrorCategory>, error: impl Into<anyhow::Error>) -> Self {
        Ended::Failed {
            category,
            error: error.into(),
        }
    }

    /// A result that could not be printed.
    pub(crate) fn unprinted(err: OutError) -> Self {
        match err {
            OutError::Closed => Ended::StdoutClosed,
            err => Ended::failed(None, err),
        }
    }

    pub(crate) fn report(self) -> ExitCode {
        let status = match self {
            Ended::Done => ExecExit::Success,
            // Nowhere to say anything: stdout's reader is gone, and stderr is for
            // what went wrong, which nothing did.
            Ended::StdoutClosed => ExecExit::StdoutClosed,
            Ended::Cancelled { how } => {
                let note = match how {
                    Some(Cancellation::Forced) => " (forced: the worker was killed)",
                    Some(Cancellation::Abandoned) => {
                        " (abandoned: the attached worker is not this host's to kill; the call may run on there)"
                    }
                    _ => "",
                };
                eprintln!("cjm-ctl: cancelled{note}");
                ExecExit::Cancelled
            }
            Ended::Failed { category, error } => {
                crate::report_error(&error);
                ExecExit::of(category)
            }
        };
        ExitCode::from(status as u8)
    }
}

/// Exit statuses of `cjm-ctl exec`, one per outcome; the error categories take the
/// codes of `sysexits.h` that mean the same, and a cancel the shell's code for a
/// command ended by SIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ExecExit {
    /// The call succeeded.
    Success = 0,
    /// Anything else: a bad command line, a broken manifest, the host's own failure.
    Other = 1,
    /// `user_input`: the arguments or the configuration were refused, or there is no
    /// such plugin (EX_DATAERR).
    UserInput = 65,
    /// `resource`: not enough memory or GPU, or the worker was killed for it
    /// (EX_UNAVAILABLE).
    Resource = 69,
    /// `fatal`: the plugin failed and trying again will not help (EX_SOFTWARE).
    Fatal = 70,
    /// `transient`: trying again may help (EX_TEMPFAIL).
    Transient = 75,
    /// Cancelled with Ctrl-C (or SIGTERM), cooperatively or by force.
    Cancelled = 130,
    /// Stdout's reader went away (`| head -2`): the call was cancelled. What a shell
    /// reports for a command ended by SIGPIPE.
    StdoutClosed = crate::out::CLOSED_EXIT,
}

impl ExecExit {
    fn of(category: Option<ErrorCategory>) -> Self {
        match category {
            Some(ErrorCategory::UserInput) => ExecExit::UserInput,
            Some(ErrorCategory::Transient) => ExecExit::Transient,
            Some(ErrorCategory::Resource) => ExecExit::Resource,
            Some(ErrorCategory::Fatal) => ExecExit::Fatal,
            _ => ExecExit::Other,
        }
    }
}

/// SIGINT and SIGTERM, counted: the first asks the call to stop, the second forces.
pub(crate) struct Interrupts {
    interrupt: Signal,
    terminate: Signal,
    seen: usize,
}

impl Interrupts {
    pub(crate) fn new() -> Result<Self> {
        Ok(Interrupts {
            interrupt: signal(SignalKind::interrupt()).context("cannot watch for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?,
            seen: 0,
        })
    }

    /// The next SIGINT or SIGTERM; how many there were so far.
    pub(crate) async fn next(&mut self) -> usize {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        self.seen += 1;
        self.seen
    }
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

pub(crate) const CANCELLING: &str = "cjm-ctl: cancelling... (Ctrl-C again to force)";

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

/// Progress as it comes: a bar on a terminal, plain lines on any other stderr.
/// The fraction shown for a report of `fraction`: never all done while the call has
/// not answered (a plugin may say 100% and still be writing its result), so at most
/// 99%.
fn shown(fraction: f64) -> f64 {
    fraction.clamp(0.0, 0.99)
}

pub(crate) struct ProgressDisplay {
    bar: Option<ProgressBar>,
    last_line: Option<String>,
}

impl ProgressDisplay {
    pub(crate) fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::hidden();
            bar.set_length(1000);
            bar
        });
        ProgressDisplay {
            bar,
            last_line: None,
        }
    }

    pub(crate) fn show(&mut self, fraction: f64, message: &str) {
        match &self.bar {
            Some(bar) => {
                // The bar stays hidden until it has its first report in full, and the
                // message goes before the position, so that no frame shows a fraction
                // beside the message of the step before it.
                // `wide_msg`: the message takes the width left and is cut there, so
                // that a long one never wraps and leaves a trail of lines.
                let style = if fraction < 0.0 {
                    // Cannot tell how far: a spinner that says what it does.
                    ProgressStyle::with_template("{spinner} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner())
                } else {
                    ProgressStyle::with_template("[{bar:30}] {percent:>3}% {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> ")
                };
                bar.set_style(style);
                bar.set_message(message.to_owned());
                if fraction >= 0.0 {
                    bar.set_position((shown(fraction) * 1000.0).round() as u64);
                }
                let first = bar.is_hidden();
                if first {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                    // Redrawn now and then, so that the last report is shown even
                    // when it came within the draw rate's limit of the one before.
                    bar.enable_steady_tick(std::time::Duration::from_millis(100));
                }
                if first || fraction < 0.0 {
                    bar.tick();
                }
            }
            None => {
                let line = if fraction < 0.0 {
                    format!("progress: {message}")
                } else {
                    format!("progress: {}% {message}", (shown(fraction) * 100.0).round())
                };
                if self.last_line.as_deref() != Some(line.as_str()) {
                    eprintln!("{}", line.trim_end());
                    self.last_line = Some(line);
                }
            }
        }
    }

    /// Print around the bar without tearing it.
    pub(crate) fn suspend(&self, print: impl FnOnce()) {
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    pub(crate) fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
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
