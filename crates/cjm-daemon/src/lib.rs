//! `cjm-daemon`: one long-lived host, a [`PluginManager`](cjm_manager::PluginManager)
//! and its [`Jobs`](cjm_manager::jobs::Jobs), served over HTTP/1.1 with JSON bodies,
//! Server-Sent Events and Prometheus metrics. `cjm-ctl serve` is its command line.
//!
//! It is a thin layer: every job goes through the same queue, journal, scheduler and
//! workers as an in-process host's; the daemon adds a listener (a Unix socket in
//! `$CJM_HOME` by default, loopback TCP on request), one daemon per home (a lock), a
//! numbered buffer of events for clients that reconnect, metrics, and an orderly stop
//! on SIGTERM.
//!
//! ```no_run
//! use cjm_daemon::{Daemon, DaemonOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let options = DaemonOptions::from_env()?;
//! let daemon = Daemon::start(options).await?;
//! println!("ready on {}", daemon.address());
//! daemon.run_until_signalled().await?;
//! # Ok(())
//! # }
//! ```

mod admission;
mod api;
mod auth;
mod body;
mod client;
mod daemon;
mod dashboard;
mod diagnostics_api;
mod error;
mod events;
mod job_arguments;
mod jobs_api;
mod jobs_query;
mod json;
mod json_lines;
mod listen;
mod lock;
mod logs_api;
mod metrics;
mod notify;
mod openapi;
mod options;
mod pem;
mod plugin_events;
mod plugin_metrics;
mod plugin_verbs;
mod plugins_api;
mod problem;
mod request;
mod sse;
mod state;
mod stream_api;
mod system_api;
mod tasks_api;
mod tls_listen;
mod token;

pub use client::{ClientError, DaemonClient};
pub use daemon::Daemon;
pub use error::DaemonError;
pub use json_lines::{JsonLines, JsonLinesError};
pub use listen::Listen;
pub use notify::{notify_systemd, NotifyError};
pub use options::{DaemonOptions, LoadAtStart};
pub use sse::{EventStream, SseEvent};
pub use tls_listen::TlsSource;
