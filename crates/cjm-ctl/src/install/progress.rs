//! What a person watching `install-all` sees: a line per step per plugin on stderr,
//! and a summary table at the end, with the end of the log of every failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
