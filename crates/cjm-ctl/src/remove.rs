use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use cjm_metadata::{validate_name, CjmHome, Manifest};

use crate::out::outln;

/// Remove an installed plugin: its manifest in $CJM_HOME/plugins and its
/// environment in $CJM_HOME/envs.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
pub struct RemoveCommand {
    /// name of the plugin
    #[argh(positional)]
    name: String,
}

pub fn run(command: RemoveCommand) -> Result<ExitCode> {
    validate_name(&command.name)?;
    let home = CjmHome::from_env()?;
    let manifest_path = home.manifest_path(&command.name);
    // The installer records the environment in the manifest; without a readable
    // one, the environment is the one named like the plugin (the default env_name).
    let env_name = Manifest::load(&manifest_path)
        .ok()
        .and_then(|manifest| {
            manifest
                .extra
                .get("env_name")
                .and_then(|value| value.as_str())
                .map(str::to_owned)
        })
        .filter(|env_name| validate_name(env_name).is_ok())
        .unwrap_or_else(|| command.name.clone());
    let env = home.envs_dir().join(&env_name);

    let mut removed = Vec::new();
    if env.exists() {
        std::fs::remove_dir_all(&env)
            .with_context(|| format!("cannot remove {}", env.display()))?;
        removed.push(env);
    }
    // The adapters its install registered go with it: left behind, they would be
    // bound to other plugins whose environments lack their modules.
    for (adapter, _) in
        crate::install::adapter_manifest::registered_for(home.plugins_dir().as_path(), &env_name)
    {
        std::fs::remove_file(&adapter)
            .with_context(|| format!("cannot remove {}", adapter.display()))?;
        removed.push(adapter);
    }
    if manifest_path.exists() {
        std::fs::remove_file(&manifest_path)
            .with_context(|| format!("cannot remove {}", manifest_path.display()))?;
        removed.push(manifest_path);
    }
    if removed.is_empty() {
        bail!(
            "plugin {} is not installed in {} (no manifest, no environment)",
            command.name,
            home.root().display()
        );
    }
    for path in removed {
        outln!("removed {}", path.display())?;
    }
    Ok(ExitCode::SUCCESS)
}
