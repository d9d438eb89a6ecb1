use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use cjm_manager::{CallArgs, ConfigMap, ManagerOptions, PluginManager};
use serde_json::Value;

/// Load a plugin, run it once, print the result as JSON and stop it.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "exec")]
pub struct ExecCommand {
    /// name of the plugin
    #[argh(positional)]
    name: String,
    /// positional arguments, a JSON array (e.g. '["hello", 2]')
    #[argh(option)]
    args: Option<String>,
    /// keyword arguments, a JSON object (e.g. '{"repeat": 2}')
    #[argh(option)]
    kwargs: Option<String>,
    /// initial configuration, a JSON object
    #[argh(option)]
    config: Option<String>,
    /// stream the results: one JSON line per chunk
    #[argh(switch)]
    stream: bool,
}

pub fn run(command: ExecCommand) -> Result<ExitCode> {
    let args = match &command.args {
        Some(text) => match parse_json("--args", text)? {
            Value::Array(args) => args,
            other => bail!("--args must be a JSON array, got {other}"),
        },
        None => Vec::new(),
    };
    let kwargs = parse_object("--kwargs", command.kwargs.as_deref())?;
    let config = match command.config.as_deref() {
        Some(text) => Some(parse_object("--config", Some(text))?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let manager = PluginManager::new(ManagerOptions::from_env()?);
        manager.discover_manifests();
        let found = manager.discovery();
        if !found
            .plugins
            .iter()
            .any(|plugin| plugin.meta.name == command.name)
        {
            // "not found" would be wrong when its manifest is there but broken.
            if let Some(problem) = found
                .problems
                .iter()
                .find(|problem| problem.path.file_stem() == Some(command.name.as_ref()))
            {
                bail!(
                    "plugin {}: its manifest {} cannot be used: {}",
                    command.name,
                    problem.path.display(),
                    problem.reason
                );
            }
        }
        for problem in &found.problems {
            tracing::warn!("skipped manifest {problem}");
        }
        let work = run_plugin(
            &manager,
            &command,
            CallArgs::from_json(args, kwargs),
            config,
        );
        let outcome = tokio::select! {
            outcome = work => outcome,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        manager.shutdown().await;
        outcome.map(|()| ExitCode::SUCCESS)
    })
}

async fn run_plugin(
    manager: &PluginManager,
    command: &ExecCommand,
    call: CallArgs,
    config: Option<ConfigMap>,
) -> Result<()> {
    manager.load_plugin(&command.name, config).await?;
    if command.stream {
        let mut stream = manager.execute_plugin_stream(&command.name, call).await?;
        while let Some(chunk) = stream.next().await {
            println!("{}", serde_json::to_string(&chunk?)?);
        }
    } else {
        let result = manager.execute_plugin(&command.name, call).await?;
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}

fn parse_json(flag: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{flag} is not valid JSON: {text}"))
}

fn parse_object(flag: &str, text: Option<&str>) -> Result<ConfigMap> {
    match text {
        None => Ok(ConfigMap::new()),
        Some(text) => match parse_json(flag, text)? {
            Value::Object(map) => Ok(map),
            other => bail!("{flag} must be a JSON object, got {other}"),
        },
    }
}
