//! A client of Ray's Jobs REST API (the dashboard's `/api/jobs/`, `/api/packages/`,
//! `/api/v0/nodes` and `/api/cluster_status`): HTTP/1.1 JSON over hyper, so that no
//! Python runs on the caller's side.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use cjm_ray::{DashboardTrust, JobSubmission, RayClient};
//!
//! # async fn example() -> Result<(), cjm_ray::RayError> {
//! let ray = RayClient::builder("https://ray-head:8265")
//!     .token_env("RAY_AUTH_TOKEN")
//!     .trust(DashboardTrust::CaFile("ray-ca.pem".into()))
//!     .build()?;
//! let job = JobSubmission::new("python -c 'print(6 * 7)'")
//!     .submission_id("answer-1")
//!     .num_cpus(1.0);
//! let id = ray.submit(&job).await?.submission_id;
//! while !ray.job(&id).await?.status.is_terminal() {
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//! }
//! print!("{}", ray.logs(&id).await?);
//! # Ok(())
//! # }
//! ```
//!
//! What Ray 2.60 does, as measured (see the repository's notes on Ray): a job whose
//! resources are not free stays `PENDING`; a stop sent then is answered
//! `{"stopped": true}` but the job stays `PENDING`, starts its entrypoint once the
//! resources free up and only then stops. [`RayClient::stop_until_gone`] therefore
//! stops and watches until the job is in a terminal state, stopping again as it
//! changes. Submitting a `submission_id` that exists is refused (Ray 2.60: with 500,
//! the agent's 400 inside); [`RayClient::submit`] then looks the job up, so a retried
//! submission finds its job. A job's `runtime_env.env_vars` can be read by anyone who
//! can read the job: never put a secret there.
//!
//! The dashboard is trusted with everything: the token and the uploaded files go to
//! it, and what a job prints comes from it. So the client speaks `https://`, trusting
//! a CA file or a pinned certificate ([`DashboardTrust`]), and plain `http://` only to
//! this machine's loopback, unless the operator accepts the risk in so many words
//! ([`RayClientBuilder::insecure_http`]).
//!
//! cjm's hosts use it to place plugin workers as Ray jobs: the worker's binary travels
//! in an uploaded `working_dir` [`Package`], the job runs it with `--listen`, and
//! [`RayClient::wait_for_handshake`] reads the worker's handshake line from the job's
//! logs ([`JobDetails::node_address`] says where to reach it). That placement, and
//! what it decides from [`RayClient::cluster_resources`], is `cjm-proxy`'s.
#![warn(missing_docs)]

mod client;
mod connect;
mod job;
mod package;
mod resources;

pub use client::{
    Placed, RayClient, RayClientBuilder, RayError, Submitted, DEFAULT_REQUEST_TIMEOUT,
};
pub use connect::{DashboardTrust, TrustError};
pub use job::{
    entrypoint_command, submission_id, JobDetails, JobStatus, JobSubmission, RuntimeEnv,
};
pub use package::{Package, PackageError};
pub use resources::NodeResources;
