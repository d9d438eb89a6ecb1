//! From a manifest to the command that starts its worker, and where it runs.
//!
//! This is the one place above the proxy that knows the kinds of placement: it turns
//! a manifest's `attach` or `placement` field into a [`Placement`]; the rest of the
//! manager sees only proxies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cjm_interface::remote::Fingerprint;
use cjm_metadata::{CjmHome, Launch, Manifest, RaySpec, WorkerPlacement};
#[cfg(feature = "ray")]
use cjm_proxy::ray::{DashboardTrust, RayClient, RayError};
#[cfg(feature = "ray")]
use cjm_proxy::RayPlacement;
use cjm_proxy::{
    Attach, ClientIdentity, LaunchSpec, ListenMode, LocalSpawn, Placement, RayOptions,
};
use parking_lot::Mutex;

use crate::ManagerOptions;

mod python_release;

use python_release::ORIGINAL_VERSION_FIELD;
use python_release::{Installed, PythonRelease};

/// Why a manifest's placement could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementSetupError {
    /// The manifest's `attach` or `placement` field is not usable.
    #[error(transparent)]
    Manifest(cjm_metadata::ManifestError),
    /// `server_fingerprint` is not a SHA-256 in hex.
    #[error("\"server_fingerprint\" {given:?}")]
    Fingerprint {
        /// As given.
        given: String,
        /// Why it is not one.
        #[source]
        source: cjm_interface::remote::FingerprintError,
    },
    /// A `token_env` names a variable the host's environment does not have.
    #[error("\"token_env\" names {variable}, which is not set in the host's environment")]
    TokenMissing {
        /// The variable.
        variable: String,
    },
    /// The host's TLS identity could not be made or read.
    #[error(transparent)]
    Identity(cjm_proxy::TlsError),
    /// The Ray address is not usable.
    #[cfg(feature = "ray")]
    #[error(transparent)]
    Ray(cjm_proxy::ray::RayError),
    /// The Ray dashboard would be reached in a way placement.ray does not allow (plain
    /// HTTP off loopback, https:// with nothing to trust), or with nothing to trust.
    #[cfg(feature = "ray")]
    #[error("{source}; in placement.ray: {hint}")]
    RayTrust {
        /// What the client refused.
        source: Box<cjm_proxy::ray::RayError>,
        /// Which fields of the manifest change that.
        hint: &'static str,
    },
    /// `dashboard_fingerprint` is not a SHA-256 in hex.
    #[error("\"dashboard_fingerprint\" {given:?}")]
    DashboardFingerprint {
        /// As given.
        given: String,
        /// Why it is not one.
        #[source]
        source: cjm_interface::remote::FingerprintError,
    },
    /// Both a CA file and a pinned certificate for the dashboard.
    #[error(
        "placement.ray gives both \"ca_file\" and \"dashboard_fingerprint\": trust the \
         dashboard one way"
    )]
    TwoTrusts,
    /// The attach address is not usable.
    #[error(transparent)]
    Attach(cjm_proxy::PlacementError),
    /// A Python plugin placed by Ray names no packages for its job to install.
    #[error(
        "a Python plugin placed by Ray needs \"pip\" in placement.ray: the packages its \
         job installs (the original, and the plugin's own)"
    )]
    PythonWithoutPip,
    /// The manifest asks for Ray placement, and this host was built without it.
    #[error(
        "the manifest asks for placement.ray, and this host was built without Ray \
         placement: build cjm-manager with its cargo feature `ray` (on by default; \
         cjm-ctl has it)"
    )]
    RayNotBuilt,
    /// `cjm-relay` is not to be found.
    #[error(
        "a Python plugin placed by Ray is shipped with cjm-relay, which is neither beside \
         this program nor on PATH (set ManagerOptions::relay_program)"
    )]
    NoRelay,
}

/// The fingerprint of this host's TLS identity (kept in `$CJM_HOME/tls`, made on
/// first use): what a worker this host attaches to must be given in
/// `CJM_CLIENT_CERT_SHA256`.
pub fn host_tls_fingerprint(home: &CjmHome) -> Result<String, cjm_proxy::TlsError> {
    ClientIdentity::kept_in(&identity_folder(home))
        .map(|identity| identity.fingerprint().to_string())
}

/// The folder under `CJM_HOME` that keeps the host's TLS identity.
pub(crate) fn identity_folder(home: &CjmHome) -> std::path::PathBuf {
    home.root().join("tls")
}

/// Why a worker's declared environment could not be given to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerEnvError {
    /// The manifest's `worker_env` is not usable.
    #[error(transparent)]
    Manifest(cjm_metadata::ManifestError),
    /// A required variable has no value.
    #[error(
        "its worker needs {variable}, which is not set{}",
        if *secret {
            format!("; set it with `cjm-ctl secrets set {plugin} {variable}`")
        } else {
            String::from(" (set it in the host's environment)")
        }
    )]
    Missing {
        /// The plugin.
        plugin: String,
        /// The variable.
        variable: String,
        /// Whether it is a secret (set in the secret store).
        secret: bool,
    },
    /// A default could not be expanded.
    #[error("its worker_env {variable}: {reason}")]
    Default {
        /// The variable.
        variable: String,
        /// Why.
        reason: String,
    },
    /// The secret store could not be read.
    #[error(transparent)]
    Secrets(cjm_metadata::SecretStoreError),
    /// The plugin's data folder could not be made.
    #[error("cannot make its data folder {}", path.display())]
    DataFolder {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The launch of `manifest`'s worker for the loaded plugin (or instance) `name`: its
/// log is `name`'s own, so that two instances never share one. A Python worker of
/// the original binds `adapters` (their `module:Class` specs: the discovered task
/// adapters that fit it) with `--adapters`, and, on this machine, writes its log
/// records into `diagnostics_db` (the jobs' diagnostics store) when there is one.
/// Where the original's worker writes its log records (a SQLite file), and the
/// session it stamps on them.
const ORIGINAL_DIAGNOSTICS_DB_ENV: &str = "CJM_DIAGNOSTICS_DB";
const ORIGINAL_SESSION_ENV: &str = "CJM_WORKER_SESSION_ID";

pub(crate) async fn launch_spec(
    name: &str,
    manifest: &Manifest,
    manifest_path: &Path,
    options: &ManagerOptions,
    adapters: &[String],
    diagnostics_db: Option<&Path>,
) -> Result<LaunchSpec, crate::ManagerError> {
    let placement_error = |source| crate::ManagerError::Placement {
        name: manifest.name.clone(),
        source: Box::new(source),
    };
    // A worker elsewhere is given the host's kept identity: file work (made on first
    // use), so off the runtime's threads.
    // A build without Ray refuses a Ray placement below, and makes no identity for it.
    let placed = manifest.placement();
    let elsewhere = matches!(placed, Ok(WorkerPlacement::Attach(_)))
        || (cfg!(feature = "ray") && matches!(placed, Ok(WorkerPlacement::Ray(_))));
    let identity = match elsewhere {
        true => Some(
            ClientIdentity::kept_in_async(identity_folder(&options.home))
                .await
                .map_err(|err| placement_error(PlacementSetupError::Identity(err)))?,
        ),
        false => None,
    };
    let log_path = CjmHome::log_path(&options.home, name);
    let launch = manifest.resolved_launch(manifest_path.parent());
    let placement = placement(manifest, manifest_path.parent(), &launch, options, identity)
        .map_err(placement_error)?;
    if let (Ok(WorkerPlacement::Ray(_)), Launch::Python { .. }, false) =
        (manifest.placement(), &launch, adapters.is_empty())
    {
        // Their modules are installed on this machine, not shipped to the Ray node:
        // a worker there that cannot import one would not start at all.
        tracing::warn!(
            "{name}: task adapters {} fit it but are not bound on Ray (they are not \
             shipped to the node); its tasks answer 404 there",
            adapters.join(", ")
        );
    }
    let relayed_before_fd = match (manifest.placement(), &launch) {
        (Ok(WorkerPlacement::Ray(ray)), Launch::Python { .. }) => {
            !relayed_original_takes_fd(manifest, &ray.pip)
        }
        _ => false,
    };
    let WorkerEnv {
        env: worker_env,
        secret_names: secret_env,
    } = worker_env(manifest, &options.home).map_err(|source| crate::ManagerError::WorkerEnv {
        name: manifest.name.clone(),
        source: Box::new(source),
    })?;
    // Our native worker on this machine writes its log as attributed lines, which
    // the jobs read back per job (`jobs/diagnostics.rs`).
    let log_lines = !elsewhere && matches!(launch, Launch::Native { .. });
    // The original's Python worker stamps each record with the job id of the call's
    // envelope and writes it to the store it is given (its `install_worker_diagnostics`).
    let python_diagnostics = match (&launch, diagnostics_db) {
        (Launch::Python { .. }, Some(db)) if !elsewhere => Some(db.to_owned()),
        _ => None,
    };
    let (program, args, listen) = match launch {
        Launch::Native { command, args } => (command, args, ListenMode::InheritUnixSocket),
        Launch::Python {
            python_path,
            module,
            class,
        } => {
            let release = python_release(manifest, &python_path);
            let mut args = vec![
                String::from("-m"),
                String::from(release.worker_module()),
                String::from("--module"),
                module,
                String::from("--class"),
                class,
            ];
            args.extend(adapters_args(adapters));
            (python_path.clone(), args, python_listen_mode(&release))
        }
    };
    let mut spec = LaunchSpec::new(name, program, log_path);
    spec.args = args;
    spec.env = manifest
        .env_vars
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .chain(worker_env)
        .collect();
    if log_lines {
        spec.env.push((
            String::from(cjm_interface::log_line::LOG_LINES_ENV),
            String::from("1"),
        ));
    }
    if let Some(db) = python_diagnostics {
        spec.env.push((
            String::from(ORIGINAL_DIAGNOSTICS_DB_ENV),
            db.to_string_lossy().into_owned(),
        ));
        spec.env
            .push((String::from(ORIGINAL_SESSION_ENV), session_id()));
    }
    if relayed_before_fd {
        // cjm-relay starts the Python worker on the node; a release before 0.0.46
        // takes only --port.
        spec.env
            .push((String::from(RELAY_CHILD_LISTEN_ENV), String::from("port")));
    }
    spec.secret_env = secret_env;
    spec.listen = listen;
    spec.start_timeout = options.start_timeout;
    spec.temp_dir = options.temp_dir.clone();
    spec.socket_dir = options.socket_dir.clone();
    spec.placement = placement;
    Ok(spec)
}

/// `--adapters module:Class,..` (the original's worker binds them), or nothing.
pub(crate) fn adapters_args(adapters: &[String]) -> Vec<String> {
    if adapters.is_empty() {
        return Vec::new();
    }
    vec![String::from("--adapters"), adapters.join(",")]
}

/// The environment the original gives a worker (its data folders, the models folder,
/// a session id), then the plugin's declared variables: from the host's environment
/// when set there (the worker inherits it), else a secret from the store or the
/// default expanded. The names of the secret ones come back too.
fn worker_env(manifest: &Manifest, home: &CjmHome) -> Result<WorkerEnv, WorkerEnvError> {
    use std::os::unix::fs::DirBuilderExt;
    let data_root = home.plugin_data_dir();
    let plugin_data = data_root.join(&manifest.name);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&plugin_data)
        .map_err(|source| WorkerEnvError::DataFolder {
            path: plugin_data.clone(),
            source,
        })?;
    let text = |path: &Path| path.to_string_lossy().into_owned();
    // Each folder under both names: the original's, and its successor's (where a
    // plugin is a capability), so that a plugin of either finds it.
    let standard = [
        ("CJM_PLUGIN_DATA_DIR", text(&data_root)),
        ("PLUGIN_DATA_DIR", text(&plugin_data)),
        ("CJM_CAPABILITY_DATA_DIR", text(&data_root)),
        ("CAPABILITY_DATA_DIR", text(&plugin_data)),
        ("CJM_MODELS_DIR", text(&home.models_dir())),
        ("PLUGIN_NAME", manifest.name.clone()),
        ("CAPABILITY_NAME", manifest.name.clone()),
    ];
    let mut env: Vec<(String, String)> = standard
        .iter()
        .filter(|(name, _)| !name.ends_with("_NAME"))
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect();
    env.push((String::from("CJM_WORKER_SESSION_ID"), session_id()));
    // The successor hands its worker the workspace the host resolved (the worker
    // alone would miss one found by walking up from the host's folder).
    if std::env::var_os(cjm_metadata::WORKSPACE_ENV).is_none() {
        if let Ok(Some(workspace)) = cjm_metadata::Workspace::resolve() {
            env.push((
                String::from(cjm_metadata::WORKSPACE_ENV),
                text(workspace.root()),
            ));
        }
    }
    let mut secret_names = Vec::new();
    let store = cjm_metadata::SecretStore::at(home.secrets_path());
    for spec in manifest.worker_env().map_err(WorkerEnvError::Manifest)? {
        if std::env::var_os(&spec.name).is_some() {
            if spec.secret {
                secret_names.push(spec.name.clone());
            }
            continue;
        }
        let value = if spec.secret {
            store
                .get(&manifest.name, &spec.name)
                .map_err(WorkerEnvError::Secrets)?
                .map(|secret| secret.expose().to_owned())
        } else {
            spec.default
                .as_deref()
                .map(|default| {
                    cjm_metadata::expand_worker_env(default, |name| {
                        standard
                            .iter()
                            .find(|(known, _)| *known == name)
                            .map(|(_, value)| value.clone())
                    })
                    .map_err(|reason| WorkerEnvError::Default {
                        variable: spec.name.clone(),
                        reason,
                    })
                })
                .transpose()?
        };
        match value {
            Some(value) => {
                if spec.secret {
                    secret_names.push(spec.name.clone());
                }
                env.push((spec.name, value));
            }
            None if spec.required => {
                return Err(WorkerEnvError::Missing {
                    plugin: manifest.name.clone(),
                    variable: spec.name,
                    secret: spec.secret,
                })
            }
            None => {}
        }
    }
    Ok(WorkerEnv { env, secret_names })
}

/// A worker's environment on top of the host's, and which of it is secret.
struct WorkerEnv {
    env: Vec<(String, String)>,
    secret_names: Vec<String>,
}

/// The first release of the original whose worker takes its socket with `--fd`.
const FIRST_FD_RELEASE: (u32, u32, u32) = (0, 0, 46);

/// Which release line a Python plugin's environment runs: what the manifest
/// records (see [`python_release::recorded`]), else the environment's own answer
/// (see [`learn_original_version`]), else the original.
fn python_release(manifest: &Manifest, python: &Path) -> PythonRelease {
    python_release::recorded(manifest)
        .or_else(|| installed_release(python))
        .unwrap_or(PythonRelease::PluginSystem(None))
}

/// How a Python worker gets its socket: `--fd` (a Unix socket in a private folder,
/// no port race) from 0.0.46 on and in every release of the successor, `--port`
/// before.
fn python_listen_mode(release: &PythonRelease) -> ListenMode {
    match release {
        PythonRelease::Substrate(_) => ListenMode::InheritUnixSocketByFdArg,
        PythonRelease::PluginSystem(version) => match version.as_deref().and_then(parse_version) {
            Some(version) if version >= FIRST_FD_RELEASE => ListenMode::InheritUnixSocketByFdArg,
            _ => ListenMode::WorkerBinds,
        },
    }
}

/// What tells `cjm-relay` how to give the worker behind it its socket
/// (`cjm_worker::relay::CHILD_LISTEN_ENV`: this crate does not link the worker's).
const RELAY_CHILD_LISTEN_ENV: &str = "CJM_RELAY_CHILD_LISTEN";

/// Whether the original a Ray job installs with `pip` takes its socket with `--fd`
/// (0.0.46 on): the version `pip` pins (`cjm_plugin_system==X`), else the one
/// `install-all` recorded, else the newest (unpinned, pip installs it).
fn relayed_original_takes_fd(manifest: &Manifest, pip: &[String]) -> bool {
    let pinned = pip.iter().find_map(|requirement| {
        let (name, version) = requirement.split_once("==")?;
        let name = name.trim().to_ascii_lowercase().replace(['-', '.'], "_");
        (name == "cjm_plugin_system").then(|| version.trim().to_owned())
    });
    if let Some(PythonRelease::Substrate(_)) = python_release::recorded(manifest) {
        return true;
    }
    let recorded = || {
        manifest
            .extra
            .get(ORIGINAL_VERSION_FIELD)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    match pinned.or_else(recorded).as_deref().and_then(parse_version) {
        Some(version) => version >= FIRST_FD_RELEASE,
        None => true,
    }
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.trim().split('.').map(|part| {
        part.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    Some((
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
        parts.next().flatten().unwrap_or(0),
    ))
}

/// How long a Python environment may take to say which original it has.
const VERSION_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The versions of `cjm_plugin_system` and `cjm_substrate` Python environments said
/// they have, by interpreter.
fn found_versions() -> &'static Mutex<HashMap<PathBuf, Installed>> {
    static FOUND: OnceLock<Mutex<HashMap<PathBuf, Installed>>> = OnceLock::new();
    FOUND.get_or_init(Default::default)
}

/// The release installed for `python`, if it has said.
fn installed_release(python: &Path) -> Option<PythonRelease> {
    found_versions()
        .lock()
        .get(python)
        .and_then(PythonRelease::of_installed)
}

/// Before a Python worker's start, where the manifest does not record which
/// original the environment has: ask the interpreter, once per interpreter (an
/// answer is kept; a failed or late one is asked again at the next start), without
/// blocking the runtime and never for longer than [`VERSION_QUERY_TIMEOUT`]. Without
/// an answer the worker is started as the original's with `--port`, which every
/// release of it accepts.
pub(crate) async fn learn_original_version(manifest: &Manifest, manifest_path: &Path) {
    if python_release::recorded(manifest).is_some() {
        return;
    }
    let Launch::Python { python_path, .. } = manifest.resolved_launch(manifest_path.parent())
    else {
        return;
    };
    if installed_release(&python_path).is_some() {
        return;
    }
    let asking = tokio::process::Command::new(&python_path)
        .args(["-c", python_release::VERSIONS_QUERY])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let python = python_path.display();
    match tokio::time::timeout(VERSION_QUERY_TIMEOUT, asking).await {
        Ok(Ok(out)) if out.status.success() => {
            let installed = Installed::parse(&String::from_utf8_lossy(&out.stdout));
            tracing::debug!("{python} has {installed:?}");
            if PythonRelease::of_installed(&installed).is_some() {
                found_versions().lock().insert(python_path, installed);
            }
        }
        Ok(Ok(out)) => tracing::debug!("{python} could not say its versions ({})", out.status),
        Ok(Err(err)) => tracing::debug!("{python} could not be asked for its version: {err}"),
        Err(_) => tracing::warn!(
            "{python} did not say which original it has within {VERSION_QUERY_TIMEOUT:?}; its worker is started with --port"
        ),
    }
}

/// A fresh id for one start of one worker (the original's `CJM_WORKER_SESSION_ID`):
/// unique, not secret.
fn session_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STARTS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or_default();
    format!(
        "{nanos:x}-{:x}-{:x}",
        std::process::id(),
        STARTS.fetch_add(1, Ordering::Relaxed)
    )
}

/// `identity`: the host's kept identity, read beforehand for a worker elsewhere.
fn placement(
    manifest: &Manifest,
    #[cfg_attr(not(feature = "ray"), allow(unused_variables))] manifest_dir: Option<&Path>,
    #[cfg_attr(not(feature = "ray"), allow(unused_variables))] launch: &Launch,
    options: &ManagerOptions,
    identity: Option<ClientIdentity>,
) -> Result<Arc<dyn Placement>, PlacementSetupError> {
    let identity = || match &identity {
        Some(identity) => Ok(identity.clone()),
        None => ClientIdentity::kept_in(&identity_folder(&options.home))
            .map_err(PlacementSetupError::Identity),
    };
    match manifest
        .placement()
        .map_err(PlacementSetupError::Manifest)?
    {
        WorkerPlacement::Attach(spec) => {
            let server: Fingerprint = spec.server_fingerprint.parse().map_err(|source| {
                PlacementSetupError::Fingerprint {
                    given: spec.server_fingerprint.clone(),
                    source,
                }
            })?;
            let mut attach =
                Attach::new(&spec.url, server, identity()?).map_err(PlacementSetupError::Attach)?;
            if let Some(variable) = &spec.token_env {
                let secret = token(variable)?;
                attach = attach
                    .bearer_secret(&secret)
                    .map_err(PlacementSetupError::Attach)?;
            }
            Ok(Arc::new(attach))
        }
        #[cfg(feature = "ray")]
        WorkerPlacement::Ray(spec) => {
            let mut ray = ray_options(manifest, &spec);
            if let Launch::Python { module, class, .. } = launch {
                if spec.pip.is_empty() {
                    return Err(PlacementSetupError::PythonWithoutPip);
                }
                let relay = relay_program(options).ok_or(PlacementSetupError::NoRelay)?;
                let command = [
                    spec.python
                        .clone()
                        .unwrap_or_else(|| String::from("python")),
                    String::from("-m"),
                    String::from(
                        python_release::recorded(manifest)
                            .unwrap_or(PythonRelease::PluginSystem(None))
                            .worker_module(),
                    ),
                    String::from("--module"),
                    module.clone(),
                    String::from("--class"),
                    class.clone(),
                ];
                ray.relay = Some(cjm_proxy::RelayShip::new(relay, command.to_vec()));
                ray.pip = spec.pip.clone();
            }
            let client = ray_client(&spec, manifest_dir)?;
            Ok(Arc::new(RayPlacement::new(client, identity()?, ray)))
        }
        #[cfg(not(feature = "ray"))]
        WorkerPlacement::Ray(_) => Err(PlacementSetupError::RayNotBuilt),
        _ => Ok(Arc::new(LocalSpawn)),
    }
}

/// The client of `spec`'s dashboard: `https://` trusting `ca_file` (relative to the
/// manifest's folder) or `dashboard_fingerprint`; plain `http://` to loopback, or
/// elsewhere with `insecure_http`. Everything is checked here, at load, before any
/// connection.
#[cfg(feature = "ray")]
fn ray_client(
    spec: &RaySpec,
    manifest_dir: Option<&Path>,
) -> Result<RayClient, PlacementSetupError> {
    let mut builder = RayClient::builder(&spec.address).insecure_http(spec.insecure_http);
    if let Some(variable) = &spec.token_env {
        builder = builder.token(&token(variable)?);
    }
    match (&spec.ca_file, &spec.dashboard_fingerprint) {
        (Some(_), Some(_)) => return Err(PlacementSetupError::TwoTrusts),
        (Some(file), None) => {
            let path = match manifest_dir {
                Some(dir) => dir.join(file),
                None => PathBuf::from(file),
            };
            builder = builder.trust(DashboardTrust::CaFile(path));
        }
        (None, Some(given)) => {
            let pinned: Fingerprint =
                given
                    .parse()
                    .map_err(|source| PlacementSetupError::DashboardFingerprint {
                        given: given.clone(),
                        source,
                    })?;
            builder = builder.trust(DashboardTrust::Pinned(pinned));
        }
        (None, None) => {}
    }
    builder.build().map_err(|err| match err {
        RayError::PlainHttpRefused { .. } | RayError::NoTrust { .. } => {
            PlacementSetupError::RayTrust {
                source: Box::new(err),
                hint: "give an https:// address with \"ca_file\" (a PEM file of the CAs that \
                       issue the dashboard's certificate) or \"dashboard_fingerprint\" (its \
                       certificate's SHA-256), or accept plain HTTP with \"insecure_http\": true",
            }
        }
        RayError::TrustWithoutTls { .. } => PlacementSetupError::RayTrust {
            source: Box::new(err),
            hint: "\"ca_file\" and \"dashboard_fingerprint\" need an https:// address",
        },
        other => PlacementSetupError::Ray(other),
    })
}

/// `cjm-relay`: the option's, else beside this program, else on `PATH`.
#[cfg(feature = "ray")]
fn relay_program(options: &ManagerOptions) -> Option<std::path::PathBuf> {
    if let Some(relay) = &options.relay_program {
        return Some(relay.clone());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("cjm-relay")))
        .filter(|path| path.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("cjm-relay"))
                .find(|candidate| candidate.is_file())
        })
    })
}

/// Plugins with the same key are placed by the same cluster: stopping one frees
/// resources the other may be waiting for. `None` for plugins on this host or attached.
pub(crate) fn placement_key(manifest: &Manifest) -> Option<String> {
    match manifest.placement() {
        Ok(WorkerPlacement::Ray(spec)) => Some(format!("ray {}", spec.address)),
        _ => None,
    }
}

/// What `manifest`'s worker holds on its Ray node of the resources that stopping it
/// gives back to a GPU job (`GPU`, `gpu_vram_mb`), as [`ray_options`] asks them;
/// `None` for a plugin not placed by Ray.
pub(crate) fn ray_gpu_held(manifest: &Manifest) -> Option<std::collections::BTreeMap<String, f64>> {
    let Ok(WorkerPlacement::Ray(spec)) = manifest.placement() else {
        return None;
    };
    let options = ray_options(manifest, &spec);
    let mut held = std::collections::BTreeMap::new();
    if options.num_gpus > 0.0 {
        held.insert(String::from("GPU"), options.num_gpus);
    }
    if let Some(vram) = options.resources.get("gpu_vram_mb") {
        held.insert(String::from("gpu_vram_mb"), *vram);
    }
    Some(held)
}

/// The manifest's resource needs in Ray's terms: a GPU plugin asks for a GPU and its
/// VRAM as the `gpu_vram_mb` resource (nodes declare theirs with `ray start
/// --resources '{"gpu_vram_mb": N}'`), RAM as the job's memory.
fn ray_options(manifest: &Manifest, spec: &RaySpec) -> RayOptions {
    let resources = &manifest.resources;
    let mut options = RayOptions::new();
    if resources.requires_gpu {
        options.num_gpus = 1.0;
        if resources.min_gpu_vram_mb > 0 {
            options.resources.insert(
                String::from("gpu_vram_mb"),
                resources.min_gpu_vram_mb as f64,
            );
        }
    }
    if resources.min_system_ram_mb > 0 {
        options.memory_mb = Some(resources.min_system_ram_mb);
    }
    options.label_selector = spec.label_selector.clone();
    if let Some(cpus) = spec.num_cpus {
        options.num_cpus = cpus;
    }
    if let Some(secs) = spec.lease_secs {
        options.lease = Duration::from_secs(secs.max(1));
    }
    if let Some(secs) = spec.place_timeout_secs {
        options.place_timeout = Duration::from_secs(secs);
    }
    options
}

fn token(variable: &str) -> Result<String, PlacementSetupError> {
    std::env::var(variable).map_err(|_| PlacementSetupError::TokenMissing {
        variable: variable.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_original_takes_fd_unless_pinned_or_recorded_before_0_0_46() {
        let manifest = |extra: &str| {
            Manifest::from_json(&format!(
                r#"{{"name": "p", "version": "1", "python_path": "/x/python",
                    "module": "m", "class": "C"{extra}}}"#
            ))
            .unwrap()
        };
        let plain = manifest("");
        let pip = |items: &[&str]| {
            items
                .iter()
                .map(|item| item.to_string())
                .collect::<Vec<_>>()
        };
        assert!(relayed_original_takes_fd(
            &plain,
            &pip(&["cjm_plugin_system", "pkg"])
        ));
        assert!(relayed_original_takes_fd(
            &plain,
            &pip(&["cjm_plugin_system==0.0.46"])
        ));
        assert!(!relayed_original_takes_fd(
            &plain,
            &pip(&["cjm-plugin-system==0.0.20"])
        ));
        let recorded_old = manifest(r#", "cjm_plugin_system_version": "0.0.20""#);
        assert!(!relayed_original_takes_fd(&recorded_old, &pip(&["pkg"])));
        // What the job installs is what runs there.
        assert!(relayed_original_takes_fd(
            &recorded_old,
            &pip(&["cjm_plugin_system==0.0.47"])
        ));
    }

    /// A host built without the feature `ray` (`cargo test -p cjm-manager
    /// --no-default-features`) refuses a manifest placed by Ray at load, naming the
    /// feature, before anything is made for it.
    #[cfg(not(feature = "ray"))]
    #[tokio::test]
    async fn ray_placement_without_the_feature_is_refused_naming_it() {
        let home = tempfile::tempdir().unwrap();
        let options = ManagerOptions::with_home(CjmHome::at(home.path()));
        let manifest_path = home.path().join("p.json");
        let manifest = Manifest::from_json(
            r#"{"name": "p", "version": "1", "command": "/bin/true",
                "placement": {"ray": {"address": "http://127.0.0.1:8265"}}}"#,
        )
        .unwrap();
        let err = launch_spec("p", &manifest, &manifest_path, &options, &[], None)
            .await
            .unwrap_err();
        let crate::ManagerError::Placement { source, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(
            matches!(**source, PlacementSetupError::RayNotBuilt),
            "{source:?}"
        );
        let text = cjm_interface::ErrorChain(&err).to_string();
        assert!(text.contains("cargo feature `ray`"), "{text}");
        assert!(
            !identity_folder(&options.home).exists(),
            "no TLS identity is made for a placement refused"
        );
    }
}
