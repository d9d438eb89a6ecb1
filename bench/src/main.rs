//! `cjm-bench`: measures this system, the loopback floor of the machine and (through
//! `python/bench_original.py`) the Python original, in one run. Driven by
//! `cargo xtask bench`, which builds it in release mode with the example plugins.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod daemon;
mod floor;
mod host_child;
mod idle;
mod jobs;
mod measure;
mod python;
mod remote;
mod report;
mod served;
mod system;
mod validation;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::report::Results;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        // Helper processes of the benchmark itself.
        Some("floor-server") => floor::serve(args.next()),
        Some("host-child") => host_child::run(args.next().context("host-child needs a CJM_HOME")?),
        Some("jobs-child") => jobs::child(args.next().context("jobs-child needs a CJM_HOME")?),
        Some("run") => {
            let options = Options::parse(args)?;
            run(&options)
        }
        _ => {
            bail!("usage: cjm-bench run --bin-dir DIR --out FILE [--python VENV_PYTHON] [--quick] [--only METRIC]")
        }
    }
}

#[derive(Debug)]
pub struct Options {
    /// Where the release binaries of the example plugins are.
    pub bin_dir: PathBuf,
    pub out: PathBuf,
    /// The venv interpreter with cjm_plugin_system 0.0.20, if one could be made.
    pub python: Option<PathBuf>,
    /// Why the Python figures are skipped, if they are.
    pub python_skip_reason: Option<String>,
    /// The venv interpreter with cjm_plugin_system 0.0.46, for its job figures.
    pub python_046: Option<PathBuf>,
    /// Why those are skipped, if they are.
    pub python_046_skip_reason: Option<String>,
    /// Fewer repetitions, for a smoke run.
    pub quick: bool,
    /// Only the metrics whose names contain this (for profiling one path).
    pub only: Option<String>,
}

impl Options {
    /// Whether any of `metrics` is to be measured in this run.
    pub fn wants(&self, metrics: &[&str]) -> bool {
        match &self.only {
            None => true,
            Some(filter) => metrics
                .iter()
                .any(|metric| metric.contains(filter.as_str())),
        }
    }
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self> {
        let mut options = Options {
            bin_dir: PathBuf::new(),
            out: PathBuf::from("target/bench/results.json"),
            python: None,
            python_skip_reason: None,
            python_046: None,
            python_046_skip_reason: None,
            quick: false,
            only: None,
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--bin-dir" => options.bin_dir = PathBuf::from(value()?),
                "--out" => options.out = PathBuf::from(value()?),
                "--python" => options.python = Some(PathBuf::from(value()?)),
                "--python-skip" => options.python_skip_reason = Some(value()?),
                "--python-046" => options.python_046 = Some(PathBuf::from(value()?)),
                "--python-046-skip" => options.python_046_skip_reason = Some(value()?),
                "--quick" => options.quick = true,
                "--only" => options.only = Some(value()?),
                other => bail!("unknown option {other}"),
            }
        }
        if options.bin_dir.as_os_str().is_empty() {
            bail!("--bin-dir is required");
        }
        // Manifests resolve relative commands against their own folder.
        options.bin_dir = std::fs::canonicalize(&options.bin_dir)
            .with_context(|| format!("--bin-dir {}", options.bin_dir.display()))?;
        Ok(options)
    }
}

fn run(options: &Options) -> Result<()> {
    let mut results = Results::new();
    if options.wants(&["floor_rtt_us", "exec_p50_us"]) {
        results.insert("floor_rtt_us", floor::tcp_rtt_us(options)?, "us");
    }
    if options.wants(&["floor_rtt_unix_us", "exec_p50_us"]) {
        results.insert("floor_rtt_unix_us", floor::unix_rtt_us(options)?, "us");
    }
    if options.wants(&["validate_config_us"]) {
        validation::measure(options, &mut results)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(system::measure_all(options, &mut results))?;
    runtime.block_on(jobs::measure(options, &mut results))?;
    runtime.block_on(remote::measure(options, &mut results))?;
    runtime.block_on(idle::measure(options, &mut results))?;
    runtime.block_on(daemon::measure(options, &mut results))?;
    drop(runtime);
    match (&options.python, &options.python_skip_reason) {
        _ if options.only.is_some() => {}
        (Some(python), _) => python::measure(options, python, &mut results)?,
        (None, Some(reason)) => eprintln!("Python original: skipped ({reason})"),
        (None, None) => eprintln!("Python original: skipped (no --python given)"),
    }
    match (&options.python_046, &options.python_046_skip_reason) {
        _ if options.only.is_some() => {}
        (Some(python), _) => python::measure_046(options, python, &mut results)?,
        (None, Some(reason)) => eprintln!("Python original 0.0.46: skipped ({reason})"),
        (None, None) => eprintln!("Python original 0.0.46: skipped (no --python-046 given)"),
    }
    results.write(&options.out)?;
    results.print_table();
    Ok(())
}
