//! Placing workers with Ray: a client of Ray's Jobs REST API (the dashboard's
//! `/api/jobs/` and `/api/packages/`), our own HTTP/1.1 JSON over hyper, so that no
//! Python runs in the host.
//!
//! A worker placed by Ray is a Ray *job* whose entrypoint starts the plugin binary
//! with `--listen`: Ray picks the node (by the job's CPUs, GPUs, memory, custom
//! resources and label selector), the binary travels in an uploaded `working_dir`
//! package ([`Package`]), the worker's handshake line is read from the job's logs, and
//! the worker is reached over pinned TLS at its node's address
//! ([`JobDetails::node_address`]). Stopping the job stops the worker.
//!
//! What Ray 2.60 does, as measured (see the repository's notes on Ray): a job whose
//! resources are not free stays `PENDING`; a stop sent then is answered
//! `{"stopped": true}` but the job stays `PENDING`, starts its entrypoint once the
//! resources free up and only then stops. [`RayClient::stop_until_gone`] therefore
//! stops and watches until the job is in a terminal state, stopping again as it
//! changes. Submitting a `submission_id` that exists is refused (Ray 2.60: with 500,
//! the agent's 400 inside); [`RayClient::submit`] then looks the job up, so a retried
//! submission finds its job. A job's `runtime_env.env_vars` can be read by anyone who
//! can read the job: never put a secret there (the pinned fingerprint is no secret).
//!
//! The dashboard is trusted with everything: the token and the binary go to it, and
//! the worker's address and certificate fingerprint come from it. So the client
//! speaks `https://`, trusting a CA file or a pinned certificate
//! ([`DashboardTrust`]), and plain `http://` only to this machine's loopback, unless
//! the operator accepts the risk in so many words
//! ([`RayClientBuilder::insecure_http`]).

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
pub(crate) use resources::{Assessment, Demand, GpuSnapshot};
