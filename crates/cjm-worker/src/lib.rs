//! Serve one [`Plugin`] over the worker protocol: the `main` of every plugin binary.
//!
//! ```no_run
//! use cjm_interface::{Call, ConfigMap, Plugin, PluginError};
//! use serde_json::{json, Value};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn name(&self) -> &str { "hello" }
//!     fn version(&self) -> &str { "0.1.0" }
//!     fn initialize(&mut self, _config: ConfigMap) -> Result<(), PluginError> { Ok(()) }
//!     fn execute(&self, call: Call) -> Result<Value, PluginError> {
//!         let who: String = call.required(0, "who")?;
//!         Ok(json!({ "greeting": format!("hello, {who}") }))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     cjm_worker::main(cjm_worker::About::default(), |_plugin_args| Ok(Hello))
//! }
//! ```
//!
//! A plugin with a configuration declares it as a typed struct: see [`config`].
//! Whatever the plugin does itself, `/initialize` checks every configuration against
//! the plugin's [`config_schema`](Plugin::config_schema) first (compiled once, on
//! first need) and answers 400 with every violation, leaving the plugin's
//! configuration as it was. The one configuration not checked again is one our host
//! has already checked against that same schema (`wire::CONFIG_CHECKED_HEADER`).
//!
//! The binary then understands `--port P --ppid PID` (serve on `127.0.0.1:P`, exit
//! when process `PID` ends), `--listen ADDR:PORT [--lease-secs N]` (serve TLS for a
//! host on another machine: see [`RemoteServe`]) and `--manifest` (print the manifest
//! fields and exit).
#![warn(missing_docs)]

use std::io::IsTerminal;

mod adapters;
mod allocator;
mod args;
mod auth;
mod body;
mod calls;
pub mod config;
mod config_check;
mod configure;
mod envelope;
mod handler;
mod handover;
mod host;
mod io_counters;
mod lifecycle;
mod listener;
mod log_lines;
#[cfg(not(feature = "remote"))]
mod no_remote;
mod offload;
mod output;
mod parent;
mod proc_stats;
#[cfg(feature = "remote")]
mod remote;
mod request;
mod resident;
mod respond;
mod server;
mod state;
mod stream;
mod task;

use std::process::ExitCode;

use cjm_interface::substrate::SubstrateVersion;
use cjm_interface::{wire, ErrorChain, Plugin, PluginError};
use cjm_metadata::ResourceRequirements;
use serde_json::{json, Value};

pub use adapters::{TaskAdapter, TaskAdapterError, TaskAdapters, TaskMethod};
pub use args::{WorkerArgs, WorkerArgsError};
/// Why a remote worker's TLS could not be set up (`cjm_tls::TlsError`).
#[cfg(feature = "remote")]
pub use cjm_tls::TlsError as TlsSetupError;
pub use handover::{HandOver, HandOverError};
#[cfg(feature = "remote")]
pub use remote::{RemoteServe, RemoteServeError};
pub use server::{serve, ServeError, ServeOptions, DEFAULT_MAX_BODY_BYTES};

/// The schema and validation crate, for what [`config`] does not cover.
pub use cjm_validation;

/// What a plugin says about itself in its manifest, beyond name and version (which
/// the [`Plugin`] reports). Built with [`About::new`] and the setters; fields may be
/// added in later releases.
///
/// ```
/// let about = cjm_worker::About::new()
///     .description("Transcribes audio")
///     .category("transcription");
/// assert_eq!(about.category, "transcription");
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct About {
    /// One line on what the plugin does.
    pub description: String,
    /// Who wrote it.
    pub author: String,
    /// The package it comes from (a crate's name, usually `env!("CARGO_PKG_NAME")`).
    pub package_name: String,
    /// Such as `"transcription"`.
    pub category: String,
    /// Fully qualified interface name, for hosts that group plugins by interface.
    pub interface: String,
    /// What an execution needs (GPU, GPU memory, system memory), for the host's
    /// scheduler.
    pub resources: ResourceRequirements,
}

impl About {
    /// Everything empty; no resource needs.
    pub fn new() -> Self {
        About::default()
    }

    /// With this description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// With this author.
    pub fn author(mut self, author: impl Into<String>) -> Self {
        self.author = author.into();
        self
    }

    /// With this package name.
    pub fn package_name(mut self, package_name: impl Into<String>) -> Self {
        self.package_name = package_name.into();
        self
    }

    /// With this category.
    pub fn category(mut self, category: impl Into<String>) -> Self {
        self.category = category.into();
        self
    }

    /// With this interface name.
    pub fn interface(mut self, interface: impl Into<String>) -> Self {
        self.interface = interface.into();
        self
    }

    /// With these resource needs.
    pub fn resources(mut self, resources: ResourceRequirements) -> Self {
        self.resources = resources;
        self
    }
}

/// The manifest fields `<binary> --manifest` prints: everything but the launch form,
/// which the installer adds.
pub fn manifest_fields(plugin: &dyn Plugin, about: &About) -> Value {
    json!({
        "name": plugin.name(),
        "version": plugin.version(),
        "description": about.description,
        "author": about.author,
        "package_name": about.package_name,
        "category": about.category,
        "interface": about.interface,
        "config_schema": plugin.config_schema(),
        "resources": about.resources,
    })
}

/// The whole `main` of a plugin binary: takes the host's hand-over (socket and
/// secret) out of the environment, installs logging (`RUST_LOG`, to stderr, which the
/// host appends to the plugin's log), parses the worker arguments, builds the plugin
/// with `make_plugin` (given the arguments the worker does not know) and serves it
/// until the host stops it or dies.
pub fn main<P, F>(about: About, make_plugin: F) -> ExitCode
where
    P: Plugin,
    F: FnOnce(&[String]) -> Result<P, PluginError>,
{
    main_with_adapters(about, TaskAdapters::new(), make_plugin)
}

/// [`main`] for a plugin that also serves task adapters on `/task` (see
/// [`TaskAdapter`]); `--manifest` then records them in its `structural_surface`.
pub fn main_with_adapters<P, F>(about: About, adapters: TaskAdapters, make_plugin: F) -> ExitCode
where
    P: Plugin,
    F: FnOnce(&[String]) -> Result<P, PluginError>,
{
    // First, before logging, the plugin or any thread exists (see `handover.rs`).
    let hand_over = if handover::is_only_thread() {
        // SAFETY: `take` changes the environment, which needs this to be the only
        // thread; it was just checked to be, and nothing between that check and
        // `take` starts one (a thread is only started by one that runs: this one).
        unsafe { HandOver::take() }
    } else {
        Err(HandOverError::NotAlone)
    };
    let args = WorkerArgs::parse(std::env::args().skip(1)).map_err(|err| err.to_string());
    let handed_a_socket = hand_over
        .as_ref()
        .is_ok_and(|hand_over| hand_over.listener.is_some());
    init_logging(args.as_ref().ok(), handed_a_socket);
    allocator::tune();
    match run(about, adapters, hand_over, args, make_plugin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run<P, F>(
    about: About,
    adapters: TaskAdapters,
    hand_over: Result<HandOver, HandOverError>,
    args: Result<WorkerArgs, String>,
    make_plugin: F,
) -> Result<(), String>
where
    P: Plugin,
    F: FnOnce(&[String]) -> Result<P, PluginError>,
{
    let hand_over = hand_over.map_err(|err| err.to_string())?;
    let args = args?;
    let hand_over = match args.fd {
        Some(fd) => hand_over
            .with_inherited_fd(fd)
            .map_err(|err| err.to_string())?,
        None => hand_over,
    };
    if args.help {
        return print_line(&usage(&about));
    }
    // Refused before the plugin loads anything: a host of a release we do not speak
    // would misread us mid-call, and echoing its version would hide that.
    let substrate = if args.manifest {
        None
    } else {
        SubstrateVersion::from_env().map_err(|err| err.to_string())?
    };
    let plugin = make_plugin(&args.plugin_args)
        .map_err(|err| format!("plugin construction failed: {err}"))?;
    if args.manifest {
        let mut fields = manifest_fields(&plugin, &about);
        if !adapters.tasks().is_empty() {
            // What hosts match adapter manifests against, recorded at install.
            fields["structural_surface"] = lifecycle::structural_surface(&adapters);
        }
        let text = serde_json::to_string(&fields).map_err(|err| err.to_string())?;
        return print_line(&text);
    }
    #[cfg(not(feature = "remote"))]
    if args.listen.is_some() {
        return Err(String::from(NO_REMOTE));
    }
    #[cfg(feature = "remote")]
    if let Some(listen) = args.listen {
        let remote = RemoteServe::from_env(listen, args.lease_secs)
            .map_err(|err| ErrorChain(&err).to_string())?;
        let options = ServeOptions::new()
            .remote(remote)
            .parent_pid(args.ppid)
            .max_body_bytes(max_body_bytes_from_env()?)
            .task_adapters(adapters)
            .answer_substrate(substrate)
            .hand_over(hand_over);
        return serve(plugin, options).map_err(|err| ErrorChain(&err).to_string());
    }
    if args.lease_secs.is_some() {
        return Err(String::from("--lease-secs needs --listen"));
    }
    let Some(port) = args.port.or(hand_over.listener.as_ref().map(|_| 0)) else {
        return Err(String::from(
            "nothing to serve on: give --port PORT, --fd N or --listen ADDR:PORT (see --help)",
        ));
    };
    let options = ServeOptions::new()
        .port(port)
        .parent_pid(args.ppid)
        .max_body_bytes(max_body_bytes_from_env()?)
        .task_adapters(adapters)
        .answer_substrate(substrate)
        .hand_over(hand_over);
    serve(plugin, options).map_err(|err| ErrorChain(&err).to_string())
}

/// What `--listen` and the usage say in a build without remote serving.
#[cfg(not(feature = "remote"))]
const NO_REMOTE: &str =
    "--listen: this plugin was built without remote serving (cjm-worker feature `remote`)";

fn print_line(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|err| format!("cannot write to stdout: {err}"))
}

fn usage(about: &About) -> String {
    let program = std::env::args()
        .next()
        .and_then(|path| {
            std::path::Path::new(&path)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| String::from("plugin"));
    let description = if about.description.is_empty() {
        String::new()
    } else {
        format!("{}\n\n", about.description)
    };
    format!(
        "{description}Usage: {program} [PLUGIN ARGS..] (--port PORT | --fd N) [--ppid PID]
{listen_synopsis}       {program} --manifest
       {program} --help

A cjm plugin worker: serves one plugin over HTTP/JSON. Hosts (cjm-manager, cjm-ctl)
start it; by hand, serve on a port and call it:
  {program} --port 8765 &  curl -s localhost:8765/health

Options:
  --port PORT   serve on 127.0.0.1:PORT (0: any free port); not needed when the host
                hands a socket over ({listen_fd})
  --fd N        serve on the listening socket inherited as descriptor N
  --ppid PID    exit when process PID ends
{remote}
  --manifest    print the manifest fields (name, version, config schema, ..) as JSON
  -h, --help    print this help

Environment: RUST_LOG (log level), {max_body} (largest request body in bytes),
{substrate} (the cjm-substrate release to answer as: {spoken}).",
        listen_fd = wire::LISTEN_FD_ENV,
        max_body = wire::MAX_BODY_ENV,
        substrate = cjm_interface::substrate::SUBSTRATE_VERSION_ENV,
        spoken = cjm_interface::substrate::SPOKEN_SUBSTRATE_VERSIONS.join(", "),
        remote = remote_usage(),
        listen_synopsis = if cfg!(feature = "remote") {
            format!("       {program} [PLUGIN ARGS..] --listen ADDR:PORT [--lease-secs N]\n")
        } else {
            String::new()
        },
    )
}

/// The usage of `--listen` and `--lease-secs`.
#[cfg(feature = "remote")]
fn remote_usage() -> String {
    format!(
        "  --listen ADDR:PORT
                serve TLS on ADDR:PORT (any interface; port 0: any free one), for a
                host on another machine; accepts only the client certificate whose
                SHA-256 is in {client_cert}, prints one JSON line
                {{\"cjm_worker\": 1, \"port\": P, \"server_cert_sha256\": HEX, \"pid\": N}}
  --lease-secs N
                with --listen: exit after N seconds without a request from the host",
        client_cert = wire::CLIENT_CERT_SHA256_ENV,
    )
}

/// In a build without remote serving, `--listen` is refused, and the usage says why.
#[cfg(not(feature = "remote"))]
fn remote_usage() -> String {
    String::from(
        "  --listen ADDR:PORT, --lease-secs N
                not in this build: this plugin was built without remote serving
                (cjm-worker feature `remote`)",
    )
}

fn max_body_bytes_from_env() -> Result<usize, String> {
    match std::env::var(wire::MAX_BODY_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_MAX_BODY_BYTES),
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{}={text:?} is not a number of bytes", wire::MAX_BODY_ENV)),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("{} is not a number of bytes", wire::MAX_BODY_ENV))
        }
    }
}

/// Logs go to stderr (the host appends them to the plugin's log file), at `info`
/// unless `RUST_LOG` says otherwise. `RUST_LOG` directives are parsed only when it is
/// set: parsing compiles regular expressions, which would add a millisecond and
/// megabytes of touched code to every worker's start for nothing.
///
/// A local worker whose host asked for attributed lines (`log_lines.rs`) writes
/// them instead, and routes what the plugin prints through itself; never for
/// `--manifest`, `--help` or `--listen`, whose stdout a program reads.
fn init_logging(args: Option<&WorkerArgs>, handed_a_socket: bool) {
    let serving_here = args.is_some_and(|args| {
        !args.help
            && !args.manifest
            && (args.port.is_some() || args.fd.is_some() || handed_a_socket)
    });
    #[cfg(feature = "remote")]
    let serving_here = serving_here && args.is_some_and(|args| args.listen.is_none());
    if serving_here && log_lines::wanted() && init_log_lines().is_ok() {
        return;
    }
    // Colours only for a person at a terminal, never into a log file.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match std::env::var_os(tracing_subscriber::EnvFilter::DEFAULT_ENV) {
        Some(_) => builder
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .try_init(),
        None => builder.with_max_level(tracing::Level::INFO).try_init(),
    };
}

/// Attributed lines (see `log_lines.rs`): records through [`log_lines::CallLayer`],
/// output through `output.rs`, both into the log file the host gave as stderr.
fn init_log_lines() -> std::io::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let sink = std::sync::Arc::new(log_lines::Sink::new(output::log_file()?));
    // As in `init_logging`: directives parsed only when there are some.
    let (directives, level) = match std::env::var_os(tracing_subscriber::EnvFilter::DEFAULT_ENV) {
        Some(_) => (
            Some(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            ),
            None,
        ),
        None => (None, Some(tracing_subscriber::filter::LevelFilter::INFO)),
    };
    tracing_subscriber::registry()
        .with(directives)
        .with(level)
        .with(log_lines::CallLayer::new(std::sync::Arc::clone(&sink)))
        .try_init()
        .map_err(std::io::Error::other)?;
    output::install(sink)
}
