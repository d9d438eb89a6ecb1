//! `cjm-ctl`: the command-line face of cjm-plugin-system. The binary is this
//! library's [`main`], so that test harnesses can link the very same program.
// stdout only through `out`, which ends the program quietly when its reader goes.
#![allow(clippy::print_stderr)]

mod completions;
mod daemon_link;
mod exec;
mod export;
mod fingerprint;
mod install;
mod job_ui;
mod jobs;
mod list;
mod logs;
mod new;
mod out;
mod python_json;
mod remote_exec;
mod remove;
mod run;
mod secrets;
mod serve;
mod stats;
mod table;
mod task;
mod validate;

use std::io::IsTerminal;
use std::process::ExitCode;

use argh::{EarlyExit, FromArgs};

/// Manage and run process-isolated cjm plugins. Honours CJM_HOME (default ~/.cjm)
/// and the project-local ./.cjm/plugins; RUST_LOG sets the log level.
#[derive(FromArgs, Debug)]
struct Cli {
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
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
    Run(run::RunCommand),
    New(new::NewCommand),
    TlsFingerprint(fingerprint::FingerprintCommand),
    Secrets(secrets::SecretsCommand),
    ExportManifest(export::ExportCommand),
    Task(task::TaskCommand),
    Completions(completions::CompletionsCommand),
    Serve(serve::ServeCommand),
}

/// What the command line asks for: a command to run, or words to print and an exit
/// status (help, the version, or why the command line is wrong).
#[derive(Debug)]
enum Parsed {
    Run(Command),
    Print { text: String, ok: bool },
}

/// Parse `args` (without the program name). argh knows only `--help`; a `-h` that
/// argh refuses stands as a flag (a `-h` taken as an option's value parses fine), so
/// it is read as `--help` on a second try.
fn parse(program: &str, args: &[String]) -> Parsed {
    let attempt = |args: &[&str]| Cli::from_args(&[program], args);
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match attempt(&words) {
        Err(refused) if refused.status.is_err() && words.contains(&"-h") => {
            let mut mapped = words.clone();
            if let Some(flag) = mapped.iter_mut().find(|word| **word == "-h") {
                *flag = "--help";
            }
            match attempt(&mapped) {
                // Still refused: the first complaint is about what was typed.
                Err(again) if again.status.is_err() => Err(refused),
                other => other,
            }
        }
        other => other,
    };
    match result {
        Ok(Cli { version: true, .. }) => Parsed::Print {
            text: format!("cjm-ctl {}", env!("CARGO_PKG_VERSION")),
            ok: true,
        },
        Ok(Cli {
            command: Some(command),
            ..
        }) => Parsed::Run(command),
        Ok(Cli { command: None, .. }) => Parsed::Print {
            text: format!("{program}: no command given; `{program} --help` lists them"),
            ok: false,
        },
        Err(EarlyExit { output, status }) if status.is_ok() => Parsed::Print {
            text: output.trim_end().to_owned(),
            ok: true,
        },
        Err(EarlyExit { output, .. }) => {
            let path = command_path(program, &words);
            let command = std::iter::once(program)
                .chain(path.iter().copied())
                .collect::<Vec<_>>()
                .join(" ");
            Parsed::Print {
                text: format!(
                    "{program}: {}\n`{command} --help` says what it takes",
                    output.trim_end()
                ),
                ok: false,
            }
        }
    }
}

/// The commands named at the start of `words` (`["jobs", "history"]` of `jobs
/// history --bogus`): the longest prefix whose `--help` argh answers.
fn command_path<'a>(program: &str, words: &[&'a str]) -> Vec<&'a str> {
    let mut path: Vec<&str> = Vec::new();
    for word in words {
        if word.starts_with('-') {
            break;
        }
        let mut asked = path.clone();
        asked.push(word);
        asked.push("--help");
        match Cli::from_args(&[program], &asked) {
            Err(EarlyExit { status: Ok(()), .. }) => path.push(word),
            _ => break,
        }
    }
    path
}

/// The help text of the command at `path` (`[]`: the program's own), as `--help`
/// prints it.
pub(crate) fn help_of(path: &[&str]) -> String {
    let mut args = path.to_vec();
    args.push("--help");
    match Cli::from_args(&["cjm-ctl"], &args) {
        Err(EarlyExit { output, .. }) => output,
        Ok(_) => String::new(),
    }
}

/// The whole program: parse the command line, run the command, map errors to a
/// message on stderr and a non-zero exit code.
pub fn main() -> ExitCode {
    let mut args = std::env::args();
    let program = args
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .map_or_else(
            || "cjm-ctl".to_owned(),
            |name| name.to_string_lossy().into_owned(),
        );
    let args: Vec<String> = args.collect();
    let parsed = parse(&program, &args);
    // A daemon logs what it does (loads, stops, interrupted jobs); the other
    // commands report problems themselves, where the manager's own lines would say
    // each twice.
    let default_filter = match &parsed {
        Parsed::Run(Command::Serve(_)) => "info",
        _ => "warn,cjm_manager::discovery=error",
    };
    let stderr_is_terminal = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(stderr_is_terminal)
        .try_init();
    let command = match parsed {
        Parsed::Run(command) => command,
        Parsed::Print { text, ok: true } => {
            return match out::outln!("{text}") {
                Ok(()) => ExitCode::SUCCESS,
                Err(out::OutError::Closed) => ExitCode::from(out::CLOSED_EXIT),
                Err(err) => {
                    report_error(&err.into());
                    ExitCode::FAILURE
                }
            };
        }
        Parsed::Print { text, ok: false } => {
            eprintln!("{text}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        Command::List(command) => list::run(command),
        Command::Exec(command) => exec::run(command),
        Command::InstallAll(command) => install::run(command),
        Command::Remove(command) => remove::run(command),
        Command::Validate(command) => validate::run(command),
        Command::Logs(command) => logs::run(command),
        Command::Stats(command) => stats::run(command),
        Command::Jobs(command) => jobs::run(command),
        Command::Run(command) => run::run(command),
        Command::New(command) => new::run(command),
        Command::TlsFingerprint(command) => fingerprint::run(command),
        Command::Secrets(command) => secrets::run(command),
        Command::ExportManifest(command) => export::run(command),
        Command::Task(command) => task::run(command),
        Command::Completions(command) => completions::run(command),
        Command::Serve(command) => serve::run(command),
    };
    match result {
        Ok(code) => code,
        // The reader went away: end quietly, as `yes | head -1`'s `yes` does.
        Err(err) if out::is_closed(&err) => ExitCode::from(out::CLOSED_EXIT),
        Err(err) => {
            report_error(&err);
            ExitCode::FAILURE
        }
    }
}

/// `cjm-ctl: <the error and its causes>` on stderr.
pub(crate) fn report_error(err: &anyhow::Error) {
    eprintln!("cjm-ctl: {}", error_message(err));
}

/// The error and its causes, `: `-separated like anyhow's `{:#}`, but a cause whose
/// text the message already holds is not said again: some library errors both print
/// their source and return it from `source()`.
fn error_message(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Parsed {
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        parse("cjm-ctl", &args)
    }

    fn help_text(args: &[&str]) -> String {
        match parsed(args) {
            Parsed::Print { text, ok: true } => text,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn dash_h_is_help_wherever_dash_dash_help_is() {
        for (short, long) in [
            (&["-h"][..], &["--help"][..]),
            (&["exec", "-h"], &["exec", "--help"]),
            (&["exec", "nope", "-h"], &["exec", "nope", "--help"]),
            (
                &["install-all", "--force", "-h"],
                &["install-all", "--help"],
            ),
            (&["logs", "-h"], &["logs", "--help"]),
        ] {
            let text = help_text(short);
            assert_eq!(text, help_text(long), "{short:?}");
            assert!(text.starts_with("Usage: cjm-ctl"), "{text}");
        }
    }

    #[test]
    fn a_dash_h_that_is_an_options_value_stays_a_value() {
        match parsed(&["exec", "echo", "--kwargs", "-h"]) {
            Parsed::Run(Command::Exec(command)) => {
                assert_eq!(format!("{command:?}").matches("\"-h\"").count(), 1)
            }
            other => panic!("{other:?}"),
        }
    }

    /// An error that prints its source and also returns it, as some library errors do.
    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot read x: {}", self.0)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let missing = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = anyhow::Error::new(Wrapper(missing())).context("plugin p");
        assert_eq!(format!("{err:#}").matches("not found").count(), 2);
        assert_eq!(
            error_message(&err),
            "plugin p: cannot read x: entity not found"
        );
        let plain = anyhow::Error::new(missing()).context("cannot read x");
        assert_eq!(error_message(&plain), "cannot read x: entity not found");
    }

    #[test]
    fn version_and_mistakes() {
        assert_eq!(
            help_text(&["--version"]),
            format!("cjm-ctl {}", env!("CARGO_PKG_VERSION"))
        );
        assert!(matches!(parsed(&[]), Parsed::Print { ok: false, .. }));
        match parsed(&["frobnicate"]) {
            Parsed::Print { text, ok: false } => {
                assert!(text.starts_with("cjm-ctl: "), "{text}");
                assert!(text.contains("frobnicate"), "{text}");
                assert!(
                    text.ends_with("`cjm-ctl --help` says what it takes"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        // The hint names the command the mistake was made in.
        match parsed(&["jobs", "history", "--bogus"]) {
            Parsed::Print { text, ok: false } => {
                assert!(
                    text.starts_with("cjm-ctl: Unrecognized argument: --bogus"),
                    "{text}"
                );
                assert!(
                    text.ends_with("`cjm-ctl jobs history --help` says what it takes"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
