//! `cargo xtask <task>`: development tasks as Rust code.
//!
//! - `e2e`: build the end-to-end fixtures and run the tests that spawn real workers.
//! - `demo`: build `cjm-ctl`, install the plugins of the repository's `plugins.yaml`
//!   with `cjm-ctl install-all` into a `CJM_HOME` (default `target/demo-home`) and run
//!   them through `cjm-ctl`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "e2e" => e2e(),
        "demo" => demo(),
        _ => {
            eprintln!("usage: cargo xtask <e2e|demo>");
            bail!("unknown task {task:?}")
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent folder")
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(command: &mut Command) -> Result<()> {
    eprintln!("$ {command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn e2e() -> Result<()> {
    let root = workspace_root()?;
    run(cargo().current_dir(&root).args([
        "test",
        "--package",
        "cjm-tests",
        "--",
        "--test-threads=2",
    ]))
}

fn demo() -> Result<()> {
    let root = workspace_root()?;
    run(cargo()
        .current_dir(&root)
        .args(["build", "--release", "--package", "cjm-ctl"]))?;
    let ctl = root.join("target/release/cjm-ctl");
    let home = match std::env::var_os("CJM_HOME") {
        Some(home) => PathBuf::from(home),
        None => root.join("target/demo-home"),
    };
    // The plugins' builds share the workspace's target folder, where cjm-ctl's
    // release build has just compiled most of their dependencies.
    let target_dir = std::env::var_os("CJM_CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    run(Command::new(&ctl)
        .current_dir(&root)
        .args(["install-all", "--config", "plugins.yaml", "--locked"])
        .env("CJM_HOME", &home)
        .env("CJM_CARGO_TARGET_DIR", &target_dir))?;
    let text_file = home.join("demo-input.txt");
    std::fs::write(
        &text_file,
        "the quick brown fox\njumps over\nthe lazy dog\n".repeat(10_000),
    )
    .with_context(|| format!("cannot write {}", text_file.display()))?;
    let text_arg = serde_json::to_string(&[text_file.to_string_lossy()])?;
    let steps: [&[&str]; 4] = [
        &["list"],
        &[
            "exec",
            "cjm-echo",
            "--args",
            r#"["hello from the host", 2]"#,
            "--config",
            r#"{"prefix": "> "}"#,
        ],
        &["exec", "cjm-echo", "--stream", "--args", "[3]"],
        &["exec", "cjm-wordcount", "--args", &text_arg],
    ];
    for step in steps {
        run(Command::new(&ctl).args(step).env("CJM_HOME", &home))?;
    }
    eprintln!("demo done; CJM_HOME={}", home.display());
    Ok(())
}
