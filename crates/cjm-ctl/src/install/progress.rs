//! What a person watching `install-all` sees: a line per step per plugin on stderr,
//! and a summary table at the end, with the end of the log of every failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::out::{outln, OutError};
use crate::table::print_table;

/// How many lines of a failed step's log the summary shows.
const TAIL_LINES: usize = 15;

/// The step lines of one plugin: `[2/5] whisper: building…`.
#[derive(Debug)]
pub struct Progress {
    pub index: usize,
    pub total: usize,
    pub name: String,
}

impl Progress {
    pub fn step(&self, what: &str) {
        eprintln!("[{}/{}] {}: {what}…", self.index, self.total, self.name);
    }

    pub fn note(&self, what: &str) {
        eprintln!("[{}/{}] {}: {what}", self.index, self.total, self.name);
    }

    /// Counts what a long step has done (`what`: "compiled"), told as it goes: in
    /// place on a terminal, else a line every [`TICK_EVERY`]; and a line at the end.
    pub fn ticker(&self, what: &'static str) -> Ticker<'_> {
        use std::io::IsTerminal;
        Ticker {
            progress: self,
            what,
            count: 0,
            fresh: 0,
            started: Instant::now(),
            told: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }
}

/// How often a ticker tells its count when stderr is not a terminal.
const TICK_EVERY: Duration = Duration::from_secs(15);

/// See [`Progress::ticker`].
pub struct Ticker<'a> {
    progress: &'a Progress,
    what: &'static str,
    count: usize,
    /// Of them, how many were done already (a crate cargo found fresh).
    fresh: usize,
    started: Instant,
    told: Instant,
    terminal: bool,
}

impl Ticker<'_> {
    /// One more done: `name` (`fresh`: it was already).
    pub fn tick(&mut self, name: &str, fresh: bool) {
        self.count += 1;
        self.fresh += usize::from(fresh);
        let (index, total, plugin) = (
            self.progress.index,
            self.progress.total,
            &self.progress.name,
        );
        if self.terminal {
            eprint!(
                "\r\x1b[2K[{index}/{total}] {plugin}: {} {} ({name})",
                self.count, self.what
            );
        } else if self.told.elapsed() >= TICK_EVERY {
            self.told = Instant::now();
            self.progress
                .note(&format!("{} {} so far ({name})", self.count, self.what));
        }
    }

    /// The step is over: its count and time, on a line of its own.
    pub fn done(self) {
        if self.terminal && self.count > 0 {
            eprint!("\r\x1b[2K");
        }
        self.progress.note(&format!(
            "{} crates {} in {:.1} s ({} of them already were)",
            self.count - self.fresh,
            self.what,
            self.started.elapsed().as_secs_f64(),
            self.fresh
        ));
    }
}

/// A step that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub step: &'static str,
    pub reason: String,
}

impl StepError {
    pub fn new(step: &'static str, reason: impl Into<String>) -> Self {
        StepError {
            step,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Result {
    Installed,
    Skipped,
    Failed(StepError),
}

/// How one plugin's install ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub result: Result,
    pub elapsed: Duration,
    pub manifest: Option<PathBuf>,
    /// The install log, for the tail of a failure.
    pub log: PathBuf,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        matches!(self.result, Result::Failed(_))
    }
}

/// The table on stdout, then each failure with the last lines of its log on stderr.
pub fn print_summary(outcomes: &[Outcome]) -> std::result::Result<(), OutError> {
    let rows: Vec<[String; 4]> = outcomes
        .iter()
        .map(|outcome| {
            let result = match &outcome.result {
                Result::Installed => "installed".to_owned(),
                Result::Skipped => "unchanged".to_owned(),
                Result::Failed(err) => format!("failed ({})", err.step),
            };
            [
                outcome.name.clone(),
                result,
                format!("{:.1}s", outcome.elapsed.as_secs_f64()),
                outcome
                    .manifest
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |path| path.display().to_string()),
            ]
        })
        .collect();
    outln!()?;
    print_table(&["PLUGIN", "RESULT", "TIME", "MANIFEST"], &rows)?;
    for outcome in outcomes {
        if let Result::Failed(err) = &outcome.result {
            eprintln!(
                "\n{} failed while {}: {}",
                outcome.name, err.step, err.reason
            );
            let tail = log_tail(&outcome.log, TAIL_LINES);
            if !tail.is_empty() {
                eprintln!("last lines of {}:", outcome.log.display());
                for line in tail {
                    eprintln!("  {line}");
                }
            }
        }
    }
    Ok(())
}

fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| (*line).to_owned())
        .collect()
}
