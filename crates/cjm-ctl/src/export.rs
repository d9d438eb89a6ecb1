use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use cjm_manager::{ManagerOptions, PluginManager};
use cjm_metadata::Launch;
use serde_json::json;

/// Write a plugin's manifest for another host: with --for-original, in the layout the
/// original 0.0.46 reads (format 2.0), its python_path naming our worker binary (which
/// ignores the Python worker's -m/--module/--class arguments that host passes).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "export-manifest")]
pub struct ExportCommand {
    /// the plugin
    #[argh(positional)]
    name: String,
    /// for the original cjm_plugin_system 0.0.46's host (the only form there is now)
    #[argh(switch)]
    for_original: bool,
    /// write here (the original looks in <its data dir>/manifests/<name>.json);
    /// default: stdout
    #[argh(option)]
    out: Option<PathBuf>,
}

pub fn run(command: ExportCommand) -> Result<ExitCode> {
    if !command.for_original {
        bail!("say which host the manifest is for: --for-original (cjm_plugin_system 0.0.46)");
    }
    let manager = PluginManager::new(ManagerOptions::from_env()?);
    manager.discover_manifests();
    let plugin = manager.discovered_plugin(&command.name).with_context(|| {
        format!(
            "plugin {} not found (cjm-ctl list shows the plugins there are)",
            command.name
        )
    })?;
    let manifest = &plugin.manifest;
    let program = match manifest.resolved_launch(plugin.path.parent()) {
        Launch::Native {
            command: program,
            args,
        } => {
            if !args.is_empty() {
                bail!(
                    "plugin {}: its manifest passes arguments ({}), and the original's host \
                     passes none of its own",
                    manifest.name,
                    args.join(" ")
                );
            }
            program
        }
        Launch::Python { .. } => bail!(
            "plugin {} is a Python plugin: the original's host runs it from its own manifest",
            manifest.name
        ),
    };
    let program = std::fs::canonicalize(&program).with_context(|| {
        format!(
            "plugin {}: its command {}",
            manifest.name,
            program.display()
        )
    })?;
    let exported = json!({
        "format_version": "2.0",
        "install": {
            "python_path": program,
            "conda_env": "",
            "db_path": "",
            "env_vars": manifest.env_vars,
            "installed_at": "",
            "installer_version": format!("cjm-ctl {} (export-manifest)", env!("CARGO_PKG_VERSION")),
            "package_source": manifest.package_name,
        },
        "code": {
            "name": manifest.name,
            "version": manifest.version,
            "description": manifest.description,
            // Passed back by the original's host as --module/--class, which our
            // worker ignores: any names do; these say what runs.
            "module": "cjm_native_worker",
            "class": manifest.name,
            "interface": manifest.interface,
            "config_schema": manifest.config_schema,
        },
        "drift_tracking": {"config_schema_hash": null, "structural_surface_hash": null},
        "overrides": {},
    });
    let text = serde_json::to_string_pretty(&exported)? + "\n";
    match &command.out {
        None => crate::out::bytes(text.as_bytes())?,
        Some(path) => {
            if let Some(folder) = path
                .parent()
                .filter(|folder| !folder.as_os_str().is_empty())
            {
                std::fs::create_dir_all(folder)
                    .with_context(|| format!("cannot make {}", folder.display()))?;
            }
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
