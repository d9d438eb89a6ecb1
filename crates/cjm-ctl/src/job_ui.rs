//! How a job run from the command line looks and ends, in-process or through a
//! daemon alike: its progress on stderr, Ctrl-C counted (cancel, then force), and the
//! exit status its end gives.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cjm_manager::jobs::Cancellation;
use cjm_manager::ErrorCategory;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::out::OutError;

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

pub(crate) const CANCELLING: &str = "cjm-ctl: cancelling... (Ctrl-C again to force)";

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
