//! `cjm-ctl`: the command-line face of cjm-plugin-system. The binary is this
//! library's [`main`], so that test harnesses can link the very same program.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod exec;
mod install;
mod jobs;
mod list;
mod logs;
mod remove;
mod stats;
mod table;
mod validate;

use std::process::ExitCode;

use argh::FromArgs;

/// Manage and run process-isolated cjm plugins. Honours CJM_HOME (default ~/.cjm)
/// and the project-local ./.cjm/plugins; RUST_LOG sets the log level.
#[derive(FromArgs, Debug)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    List(list::ListCommand),
    Exec(exec::ExecCommand),
    InstallAll(install::InstallAllCommand),
    Remove(remove::RemoveCommand),
    Validate(validate::ValidateCommand),
    Logs(logs::LogsCommand),
    Stats(stats::StatsCommand),
    Jobs(jobs::JobsCommand),
}

/// The whole program: parse the command line, run the command, map errors to a
/// message on stderr and a non-zero exit code.
pub fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let cli: Cli = argh::from_env();
    let result = match cli.command {
        Command::List(command) => list::run(command),
        Command::Exec(command) => exec::run(command),
        Command::InstallAll(command) => install::run(command),
        Command::Remove(command) => remove::run(command),
        Command::Validate(command) => validate::run(command),
        Command::Logs(command) => logs::run(command),
        Command::Stats(command) => stats::run(command),
        Command::Jobs(command) => jobs::run(command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cjm-ctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}
