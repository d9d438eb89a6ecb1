//! `cjm-soak`: keeps the system busy and checks that it holds steady. Three phases,
//! each measuring the host's (and its workers') resident memory and open
//! descriptors after a warm-up and at the end, and failing past fixed limits:
//!
//! 1. `calls`: one plugin called many times (one call in 100 with a file-backed
//!    argument, whose temporary files must all be gone at the end);
//! 2. `cycles`: a plugin loaded and unloaded many times (no worker may be left);
//! 3. `load`: several clients calling several workers at once for a while, with no
//!    error allowed.
//!
//! Driven by `cargo xtask soak`, which builds it in release mode; a test runs a tiny
//! version of it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod usage;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cjm_manager::{CallArgs, CjmHome, ManagerOptions, PluginManager};
use serde_json::json;

use crate::usage::{Drift, Usage};

/// Growth allowed across a phase once warmed up. The allocator keeps some freed
/// memory and a busy runtime grows a few buffers (under 1 MiB in our runs); a leak
/// of 40 bytes per call would pass 4 MiB at the default 100,000 calls.
const MAX_HOST_RSS_GROWTH_KIB: i64 = 4 * 1024;
const MAX_WORKER_RSS_GROWTH_KIB: i64 = 4 * 1024;
/// Descriptors may differ by a few pooled connections: hyper-util's pool races a new
/// connection against the return of the last one, so even a sequential caller opens
/// another now and then on a loaded machine (each costs the worker a socket and its
/// connection runtime's descriptors, about five). A leak per call would pass this
/// by far at the default 100,000 calls.
const MAX_FD_GROWTH: i64 = 16;

#[derive(Debug)]
struct Options {
    calls: u64,
    cycles: u64,
    load_secs: u64,
    clients: usize,
    workers: usize,
    echo: PathBuf,
}

impl Options {
    fn parse() -> Result<Self> {
        let mut options = Options {
            calls: 100_000,
            cycles: 1_000,
            load_secs: 60,
            clients: 32,
            workers: 4,
            echo: std::env::current_exe()?
                .parent()
                .context("cjm-soak has no folder")?
                .join("soak-echo"),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--calls" => options.calls = value()?.parse()?,
                "--cycles" => options.cycles = value()?.parse()?,
                "--load-secs" => options.load_secs = value()?.parse()?,
                "--clients" => options.clients = value()?.parse()?,
                "--workers" => options.workers = value()?.parse()?,
                "--echo" => options.echo = PathBuf::from(value()?),
                other => bail!(
                    "unknown option {other}; usage: cjm-soak [--calls N] [--cycles N] \
                     [--load-secs S] [--clients N] [--workers N] [--echo PATH]"
                ),
            }
        }
        if options.workers == 0 || options.clients == 0 {
            bail!("--workers and --clients must be at least 1");
        }
        Ok(options)
    }
}

/// A temporary CJM_HOME whose manifests all start the echo plugin.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new(echo: &Path, names: &[String]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("plugins"))?;
        std::fs::create_dir_all(dir.path().join("tmp"))?;
        for name in names {
            let manifest = json!({"name": name, "version": "0.1.0", "command": echo});
            std::fs::write(
                dir.path().join(format!("plugins/{name}.json")),
                manifest.to_string(),
            )?;
        }
        Ok(Home { dir })
    }

    fn temp_dir(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    fn manager(&self) -> PluginManager {
        let mut options = ManagerOptions::with_home(CjmHome::at(self.dir.path()));
        options.search_paths = vec![self.dir.path().join("plugins")];
        options.temp_dir = self.temp_dir();
        let manager = PluginManager::new(options);
        manager.discover_manifests();
        manager
    }
}

fn usage(pid: Option<u32>) -> Result<Usage> {
    Usage::of(pid).with_context(|| format!("cannot read /proc for {pid:?}"))
}

fn worker_pid(manager: &PluginManager, name: &str) -> Result<u32> {
    Ok(manager
        .worker_info(name)
        .with_context(|| format!("{name} not loaded"))?
        .pid)
}

async fn call(manager: &PluginManager, name: &str, i: u64) -> Result<()> {
    let args = CallArgs::new().arg(format!("soak {i}"));
    // One call in a hundred takes a file-backed argument.
    let args = if i % 100 == 0 {
        args.file_kwarg("file_path", format!("file {i}"))
    } else {
        args
    };
    manager.execute_plugin(name, args).await?;
    Ok(())
}

async fn calls_phase(options: &Options, problems: &mut Vec<String>) -> Result<()> {
    let name = String::from("echo");
    let home = Home::new(&options.echo, std::slice::from_ref(&name))?;
    let manager = home.manager();
    manager.load_plugin(&name, None).await?;
    let pid = worker_pid(&manager, &name)?;
    let warm_up = (options.calls / 20).max(100);
    for i in 0..warm_up {
        call(&manager, &name, i).await?;
    }
    let (host_start, worker_start) = (usage(None)?, usage(Some(pid))?);
    let started = Instant::now();
    for i in 0..options.calls {
        call(&manager, &name, i).await?;
    }
    let elapsed = started.elapsed();
    let host = Drift {
        what: String::from("host"),
        start: host_start,
        end: usage(None)?,
    };
    let worker = Drift {
        what: String::from("worker"),
        start: worker_start,
        end: usage(Some(pid))?,
    };
    manager.shutdown().await;
    let left = std::fs::read_dir(home.temp_dir())?.count();
    println!(
        "calls: {} calls in {:.1} s ({:.0}/s), temp files left: {left}",
        options.calls,
        elapsed.as_secs_f64(),
        options.calls as f64 / elapsed.as_secs_f64()
    );
    println!("  {host}\n  {worker}");
    problems.extend(host.check(MAX_HOST_RSS_GROWTH_KIB, MAX_FD_GROWTH));
    problems.extend(worker.check(MAX_WORKER_RSS_GROWTH_KIB, MAX_FD_GROWTH));
    if left != 0 {
        problems.push(format!("calls: {left} temporary files left behind"));
    }
    Ok(())
}

async fn cycles_phase(options: &Options, problems: &mut Vec<String>) -> Result<()> {
    let name = String::from("echo");
    let home = Home::new(&options.echo, std::slice::from_ref(&name))?;
    let manager = home.manager();
    let cycle = |manager: PluginManager, name: String| async move {
        manager.load_plugin(&name, None).await?;
        manager
            .execute_plugin(&name, CallArgs::new().arg("cycle"))
            .await?;
        let pid = worker_pid(&manager, &name)?;
        manager.unload_plugin(&name).await?;
        anyhow::Ok(pid)
    };
    let warm_up = (options.cycles / 20).max(5);
    for _ in 0..warm_up {
        cycle(manager.clone(), name.clone()).await?;
    }
    let host_start = usage(None)?;
    let started = Instant::now();
    let mut survivors = 0;
    for _ in 0..options.cycles {
        let pid = cycle(manager.clone(), name.clone()).await?;
        if Usage::of(Some(pid)).is_some() && process_alive(pid) {
            survivors += 1;
        }
    }
    let elapsed = started.elapsed();
    let host = Drift {
        what: String::from("host"),
        start: host_start,
        end: usage(None)?,
    };
    println!(
        "cycles: {} load/call/unload cycles in {:.1} s ({:.1} ms each), workers left running: {survivors}",
        options.cycles,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / options.cycles.max(1) as f64
    );
    println!("  {host}");
    problems.extend(host.check(MAX_HOST_RSS_GROWTH_KIB, MAX_FD_GROWTH));
    if survivors != 0 {
        problems.push(format!("cycles: {survivors} workers outlived their unload"));
    }
    Ok(())
}

/// Alive and not a zombie.
fn process_alive(pid: u32) -> bool {
    use procfs_core::FromRead;
    procfs_core::process::Stat::from_file(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !matches!(stat.state, 'Z' | 'X'))
}

async fn load_phase(options: &Options, problems: &mut Vec<String>) -> Result<()> {
    let names: Vec<String> = (0..options.workers).map(|i| format!("echo-{i}")).collect();
    let home = Home::new(&options.echo, &names)?;
    let manager = home.manager();
    for name in &names {
        manager.load_plugin(name, None).await?;
    }
    let pids = names
        .iter()
        .map(|name| worker_pid(&manager, name))
        .collect::<Result<Vec<_>>>()?;
    let run = |duration: Duration| {
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        for client in 0..options.clients {
            let (manager, ok, errors) = (manager.clone(), Arc::clone(&ok), Arc::clone(&errors));
            let name = names[client % names.len()].clone();
            clients.push(tokio::spawn(async move {
                let deadline = Instant::now() + duration;
                let mut i = 0u64;
                while Instant::now() < deadline {
                    match call(&manager, &name, i).await {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(err) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("load: {err:#}");
                            }
                            0
                        }
                    };
                    i += 1;
                }
            }));
        }
        async move {
            for client in clients {
                client.await?;
            }
            anyhow::Ok((ok.load(Ordering::Relaxed), errors.load(Ordering::Relaxed)))
        }
    };
    run(Duration::from_secs(options.load_secs.div_ceil(10).max(1))).await?;
    let host_start = usage(None)?;
    let workers_start = pids
        .iter()
        .map(|&pid| usage(Some(pid)))
        .collect::<Result<Vec<_>>>()?;
    let started = Instant::now();
    let (ok, errors) = run(Duration::from_secs(options.load_secs)).await?;
    let elapsed = started.elapsed();
    let host = Drift {
        what: String::from("host"),
        start: host_start,
        end: usage(None)?,
    };
    println!(
        "load: {} clients x {} workers for {:.1} s: {ok} calls ({:.0}/s), {errors} errors",
        options.clients,
        options.workers,
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64()
    );
    println!("  {host}");
    problems.extend(host.check(MAX_HOST_RSS_GROWTH_KIB, MAX_FD_GROWTH));
    for ((name, &pid), start) in names.iter().zip(&pids).zip(workers_start) {
        let worker = Drift {
            what: format!("worker {name}"),
            start,
            end: usage(Some(pid))?,
        };
        println!("  {worker}");
        problems.extend(worker.check(MAX_WORKER_RSS_GROWTH_KIB, MAX_FD_GROWTH));
    }
    manager.shutdown().await;
    if errors != 0 {
        problems.push(format!("load: {errors} calls failed"));
    }
    Ok(())
}

fn main() -> Result<()> {
    let options = Options::parse()?;
    if !options.echo.is_file() {
        bail!(
            "no echo plugin at {}; build the soak-echo binary or pass --echo",
            options.echo.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let mut problems = Vec::new();
    runtime.block_on(async {
        calls_phase(&options, &mut problems).await?;
        cycles_phase(&options, &mut problems).await?;
        load_phase(&options, &mut problems).await
    })?;
    println!("soak done in {:.1} s", started.elapsed().as_secs_f64());
    if !problems.is_empty() {
        bail!("the soak found problems:\n  {}", problems.join("\n  "));
    }
    println!("steady: no error, no growth past the limits");
    Ok(())
}
