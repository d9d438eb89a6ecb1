use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use cjm_interface::substrate::{
    SubstrateVersion, SPOKEN_SUBSTRATE_VERSIONS, SUBSTRATE_VERSION_ENV,
};
use cjm_manager::{ManagerOptions, PluginManager};
use cjm_metadata::Launch;
use serde_json::json;

/// Write a plugin's manifest for another host: with --for-original, in the layout the
/// original 0.0.46 reads (format 2.0), its python_path naming our worker binary (which
/// ignores the Python worker's -m/--module/--class arguments that host passes); with
/// --for-substrate VERSION, the same layout for the successor's host of that release
/// (cjm-substrate), telling the worker which release to answer as.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "export-manifest")]
pub struct ExportCommand {
    /// the plugin
    #[argh(positional)]
    name: String,
    /// for the original cjm_plugin_system 0.0.46's host
    #[argh(switch)]
    for_original: bool,
    /// for the host of this cjm-substrate release (the original's successor; its
    /// host refuses a worker that does not answer as its own release)
    #[argh(option)]
    for_substrate: Option<String>,
    /// write here (the original looks in <its data dir>/manifests/<name>.json);
    /// default: stdout
    #[argh(option)]
    out: Option<PathBuf>,
}

pub fn run(command: ExportCommand) -> Result<ExitCode> {
    // Checked before anything is read: a release our workers do not speak is refused
    // here, not by a host that would wait for a worker that will not start.
    let substrate = command
        .for_substrate
        .as_deref()
        .map(|asked| SubstrateVersion::parse(asked, "--for-substrate"))
        .transpose()?;
    if command.for_original && substrate.is_some() {
        // One manifest, one host: the worker names its errors the way that host does.
        bail!(
            "--for-original and --for-substrate are different hosts: write one manifest \
             for each"
        );
    }
    if !command.for_original && substrate.is_none() {
        bail!(
            "say which host the manifest is for: --for-original (cjm_plugin_system 0.0.46) \
             or --for-substrate VERSION (cjm-substrate: {})",
            SPOKEN_SUBSTRATE_VERSIONS.join(", ")
        );
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
    let mut env_vars = manifest.env_vars.clone();
    let mut installer_version = format!("cjm-ctl {} (export-manifest)", env!("CARGO_PKG_VERSION"));
    if let Some(version) = substrate {
        // Its host passes the manifest's variables to the worker: this one says which
        // release to answer as (`/health`'s substrate_version).
        env_vars.insert(
            SUBSTRATE_VERSION_ENV.to_owned(),
            version.as_str().to_owned(),
        );
        installer_version = format!(
            "cjm-ctl {} (export-manifest for cjm-substrate {version})",
            env!("CARGO_PKG_VERSION")
        );
    }
    let mut exported = json!({
        "format_version": "2.0",
        "install": {
            "python_path": program,
            "conda_env": "",
            "db_path": "",
            "env_vars": env_vars,
            "installed_at": "",
            "installer_version": installer_version,
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
    if substrate.is_some() {
        // The successor's install section: no cjm-* distribution is installed for a
        // native worker, so nothing is resolved.
        exported["install"]["mode"] = json!("distribution");
        exported["install"]["resolved"] = json!({});
        exported["install"]["refreshed_at"] = json!("");
        // Its host hashes the live /config_schema at load and warns of drift when
        // this differs: recorded, so that a worker serving what it exported is quiet.
        exported["drift_tracking"]["config_schema_hash"] =
            json!(crate::python_json::schema_hash(&manifest.config_schema));
    }
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
