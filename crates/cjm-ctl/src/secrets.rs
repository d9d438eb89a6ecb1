use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use cjm_metadata::{validate_name, CjmHome, Secret, SecretStore};

use crate::out::outln;

/// Plugins' secrets, kept in $CJM_HOME/secrets.json (mode 0600) and given only to
/// their workers' environments.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "secrets")]
pub struct SecretsCommand {
    #[argh(subcommand)]
    action: Action,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Action {
    Set(SetCommand),
    List(ListCommand),
    Remove(RemoveCommand),
}

/// Set a plugin's secret; the value is read from stdin (not echoed on a terminal),
/// never from the command line, which other users can read.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "set")]
struct SetCommand {
    /// the plugin
    #[argh(positional)]
    plugin: String,
    /// the variable, as the plugin's worker_env names it
    #[argh(positional)]
    variable: String,
}

/// List the secrets set (names only, never values).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
struct ListCommand {
    /// only this plugin's
    #[argh(positional)]
    plugin: Option<String>,
}

/// Remove a plugin's secret.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
struct RemoveCommand {
    /// the plugin
    #[argh(positional)]
    plugin: String,
    /// the variable
    #[argh(positional)]
    variable: String,
}

pub fn run(command: SecretsCommand) -> Result<ExitCode> {
    let store = SecretStore::at(CjmHome::from_env()?.secrets_path());
    match command.action {
        Action::Set(set) => {
            validate_name(&set.plugin)?;
            SecretStore::check_variable(&set.variable)?;
            let value = read_value(&set.plugin, &set.variable)?;
            store.set(&set.plugin, &set.variable, Secret::new(value))?;
            eprintln!(
                "set {} for {} in {}",
                set.variable,
                set.plugin,
                store.path().display()
            );
        }
        Action::List(list) => {
            for (plugin, names) in store.names()? {
                if list.plugin.as_ref().is_some_and(|only| *only != plugin) {
                    continue;
                }
                for name in names {
                    outln!("{plugin} {name}")?;
                }
            }
        }
        Action::Remove(remove) => {
            if !store.remove(&remove.plugin, &remove.variable)? {
                bail!("plugin {} has no secret {}", remove.plugin, remove.variable);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of stdin, without its line end; on a terminal, asked for and not echoed.
fn read_value(plugin: &str, variable: &str) -> Result<String> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let echo = if terminal {
        eprint!("{variable} for {plugin}: ");
        std::io::stderr().flush().ok();
        Some(EchoOff::new(&stdin).context("cannot turn the terminal's echo off")?)
    } else {
        None
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    drop(echo);
    if terminal {
        eprintln!();
    }
    read.context("cannot read the secret from stdin")?;
    let value = line.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        bail!("no value given for {variable} (it is read from stdin)");
    }
    Ok(value)
}

/// The terminal's echo off until dropped.
struct EchoOff<'a> {
    stdin: &'a std::io::Stdin,
    saved: rustix::termios::Termios,
}

impl<'a> EchoOff<'a> {
    fn new(stdin: &'a std::io::Stdin) -> std::io::Result<Self> {
        let saved = rustix::termios::tcgetattr(stdin)?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &quiet)?;
        Ok(EchoOff { stdin, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            self.stdin,
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
