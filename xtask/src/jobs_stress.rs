//! `cargo xtask jobs-stress [--runs N] [--no-load]`: the job tests (the state
//! machine's property and step tests, and the end-to-end job and race tests with
//! real workers) run N times in a row (default 50) while the machine is loaded, so
//! that an ordering that only a busy machine produces shows up. The load is
//! `stress-ng --cpu <cores>` when it is installed, else as many threads of this
//! process spinning. Stops at the first failure, naming the run.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{cargo, run, workspace_root};

/// Load on every core until dropped.
enum Load {
    StressNg(Child),
    Spinning(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>),
    None,
}

impl Load {
    fn start(cores: usize) -> Load {
        let stress_ng = Command::new("stress-ng")
            .args(["--cpu", &cores.to_string(), "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(child) = stress_ng {
            eprintln!("load: stress-ng --cpu {cores}");
            return Load::StressNg(child);
        }
        eprintln!("load: {cores} spinning threads (stress-ng is not installed)");
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..cores)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Load::Spinning(stop, threads)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        match self {
            Load::StressNg(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Load::Spinning(stop, threads) => {
                stop.store(true, Ordering::Relaxed);
                for thread in threads.drain(..) {
                    let _ = thread.join();
                }
            }
            Load::None => {}
        }
    }
}

pub(crate) fn jobs_stress(args: Vec<String>) -> Result<()> {
    let mut runs = 50u32;
    let mut load = true;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .context("--runs needs a number")?
                    .parse()
                    .context("--runs needs a number")?;
            }
            "--no-load" => load = false,
            other => bail!("jobs-stress: unknown option {other:?} (--runs N, --no-load)"),
        }
    }
    let root = workspace_root()?;
    let suites: [&[&str]; 2] = [
        &["test", "--package", "cjm-manager", "--lib", "--", "jobs::"],
        &[
            "test",
            "--package",
            "cjm-tests",
            "--test",
            "e2e",
            "--",
            "jobs::",
            "races::",
        ],
    ];
    // Built once, unloaded; each run then only runs them.
    for suite in suites {
        let mut build: Vec<&str> = suite
            .iter()
            .take_while(|arg| **arg != "--")
            .copied()
            .collect();
        build.push("--no-run");
        run(cargo().current_dir(&root).args(&build))?;
    }
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let _load = if load { Load::start(cores) } else { Load::None };
    let started = Instant::now();
    for n in 1..=runs {
        for suite in suites {
            let status = cargo()
                .current_dir(&root)
                .args(suite)
                .arg("--quiet")
                .status()
                .with_context(|| format!("cannot run cargo {suite:?}"))?;
            if !status.success() {
                bail!(
                    "run {n} of {runs}: cargo {} failed ({status}); run it alone to see why",
                    suite.join(" ")
                );
            }
        }
        eprintln!(
            "run {n} of {runs}: passed ({:.0?} so far)",
            started.elapsed()
        );
    }
    eprintln!(
        "{runs} runs of the job tests passed under load in {:.0?}",
        started.elapsed()
    );
    Ok(())
}
