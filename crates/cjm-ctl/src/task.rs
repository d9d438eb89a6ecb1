use std::process::ExitCode;

use anyhow::Result;
use argh::FromArgs;
use cjm_manager::jobs::TaskCall;
use cjm_manager::CallArgs;

use crate::exec::{parse_object, run_as_job, Submit};
use crate::remote_exec::RemoteCall;

/// Load a plugin, call one method of a task adapter bound in its worker (the
/// original's task channel, `/task`) as a job, print the result as JSON and stop it.
/// Progress, Ctrl-C and the exit status as for `exec`: 0 ok, 65 user_input (an
/// unknown task or method included), 69 resource, 70 fatal, 75 transient, 130
/// cancelled, 141 stdout closed, 1 other. Through a daemon when one serves
/// CJM_HOME (--local: here).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "task")]
pub struct TaskCommand {
    /// name of the plugin
    #[argh(positional)]
    name: String,
    /// the task, such as graph-storage
    #[argh(positional)]
    task: String,
    /// the adapter's method
    #[argh(positional)]
    method: String,
    /// keyword arguments, a JSON object (e.g. '{"text": "a b"}')
    #[argh(option)]
    kwargs: Option<String>,
    /// initial configuration, a JSON object
    #[argh(option)]
    config: Option<String>,
    /// run in this process even when a daemon serves CJM_HOME
    #[argh(switch)]
    local: bool,
}

pub fn run(command: TaskCommand) -> Result<ExitCode> {
    let kwargs = parse_object("--kwargs", command.kwargs.as_deref())?;
    let config = match command.config.as_deref() {
        Some(text) => Some(parse_object("--config", Some(text))?),
        None => None,
    };
    if let Some(client) = crate::daemon_link::find(command.local)? {
        let call = RemoteCall {
            plugin: command.name,
            args: Vec::new(),
            kwargs,
            task: Some((command.task, command.method)),
            config,
        };
        return crate::remote_exec::run(client, call, false);
    }
    let task = TaskCall::new(command.task, command.method);
    let call = CallArgs::from_json(Vec::new(), kwargs);
    run_as_job(&command.name, config, Submit::Task(task, call))
}
