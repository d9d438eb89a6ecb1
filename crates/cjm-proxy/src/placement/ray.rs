//! Ray placement: the worker runs as a Ray job, placed by Ray's scheduler on a node
//! with the resources and labels asked for.
//!
//! The plugin's binary is shipped as a `working_dir` package (uploaded once per
//! content), the job runs it with `--listen 0.0.0.0:0 --lease-secs N`, the host reads
//! the worker's handshake (port, certificate fingerprint) from the job's logs and
//! reaches it over pinned TLS at its node's address. A terminal job state is the
//! worker's exit; stopping the worker stops the job (again, if it was still pending).
//! The host's certificate fingerprint goes in the job's `env_vars`, which anyone who
//! can read the job can read: it is public by design, and nothing secret is ever put
//! there (a spec carrying secret variables is refused).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cjm_interface::wire;
use cjm_ray::{entrypoint_command, submission_id, JobStatus, JobSubmission, Package, RayClient};

use self::demand::{Assessment, Demand, GpuSnapshot};
use super::remote::{RemoteWorker, Stopper};
use super::Shortfall;
use super::{PlaceFuture, Placed, Placement, RayOptions};
use crate::endpoint::Endpoint;
use crate::error::PlacementError;
use crate::launch::WaitingHook;
use crate::transport::Transport;
use crate::worker::Worker;
use crate::{LaunchSpec, ProxyError};
use cjm_tls::{ClientIdentity, PinnedConnector};

mod demand;

/// How often the host asks Ray whether the worker's job is still running.
const JOB_POLL: Duration = Duration::from_secs(1);

/// While job `id` is pending, look every `every` at what it waits for; when it waits
/// only for GPU resources that stopping a worker would free, call `hook` with what is
/// missing where. Once the hook stopped a worker, it is not called again until Ray
/// reports more GPU resources free on those nodes than before that stop (or the job
/// no longer pends): one stop per shortfall, never a second one for the same memory
/// while the first one's is on its way back. Returns once the job no longer pends.
async fn free_while_pending(
    client: RayClient,
    id: String,
    demand: Demand,
    hook: WaitingHook,
    every: Duration,
) {
    let mut stopped_for: Option<(String, GpuSnapshot)> = None;
    let mut said_cannot_tell = false;
    loop {
        tokio::time::sleep(every).await;
        match client.job(&id).await {
            Ok(job) if job.status == JobStatus::Pending => {}
            Ok(_) => return,
            Err(err) => {
                tracing::debug!("Ray job {id}: {err}");
                continue;
            }
        }
        let nodes = match client.cluster_resources().await {
            Ok(Some(nodes)) => nodes,
            Ok(None) => {
                if !said_cannot_tell {
                    said_cannot_tell = true;
                    tracing::warn!(
                        "Ray job {id} is pending, and Ray at {} does not report what is free \
                         where (no usage by node in /api/cluster_status): no idle worker is \
                         stopped for it",
                        client.address()
                    );
                }
                continue;
            }
            Err(err) => {
                tracing::debug!("Ray job {id}: {err}");
                continue;
            }
        };
        if let Some((stopped, before)) = &stopped_for {
            if !before.freed_in(&nodes) {
                tracing::debug!(
                    "Ray job {id} is pending; what stopping {stopped} freed is not seen free yet"
                );
                continue;
            }
            stopped_for = None;
        }
        match demand.assess(&nodes) {
            Assessment::ShortOfGpu(missing) => {
                let before = GpuSnapshot::of(&missing, &nodes);
                tracing::debug!("Ray job {id} is pending for GPU resources: {missing:?}");
                if let Some(stopped) = hook.call(Shortfall::new(missing)).await {
                    stopped_for = Some((stopped, before));
                }
            }
            Assessment::Fits => {
                tracing::debug!("Ray job {id} is pending, with room for it: about to start");
            }
            Assessment::ShortOf(what) => tracing::debug!(
                "Ray job {id} is pending for {what:?}, which stopping a GPU worker would not free"
            ),
            Assessment::NoNode => tracing::debug!(
                "Ray job {id} is pending, and no live node with its labels could ever hold it"
            ),
        }
    }
}

/// Places workers as jobs of the Ray cluster `client` talks to.
#[derive(Debug)]
pub struct RayPlacement {
    client: RayClient,
    identity: ClientIdentity,
    options: RayOptions,
    /// This host's run, so that two hosts (or two runs of one) never share a job id.
    run: String,
    /// Starts so far: a restarted worker is a new job (Ray keeps ended jobs' ids).
    starts: AtomicU64,
}

impl RayPlacement {
    /// Workers placed through `client`, presenting `identity`.
    pub fn new(client: RayClient, identity: ClientIdentity, options: RayOptions) -> Self {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or_default();
        RayPlacement {
            client,
            identity,
            options,
            run: format!("{}-{started}", std::process::id()),
            starts: AtomicU64::new(0),
        }
    }

    /// The binary that goes in the job's package: the worker's, or the relay's.
    fn shipped(&self, spec: &LaunchSpec) -> std::path::PathBuf {
        match &self.options.relay {
            Some(relay) => relay.binary.clone(),
            None => spec.program.clone(),
        }
    }

    /// What the job asks of a node, in Ray's names, as [`submission`](Self::submission)
    /// asks it.
    fn demand(&self) -> Demand {
        let options = &self.options;
        let mut resources = options.resources.clone();
        if options.num_cpus > 0.0 {
            resources.insert(String::from("CPU"), options.num_cpus);
        }
        if options.num_gpus > 0.0 {
            resources.insert(String::from("GPU"), options.num_gpus);
        }
        if let Some(mb) = options.memory_mb {
            resources.insert(
                String::from("memory"),
                mb.saturating_mul(1024 * 1024) as f64,
            );
        }
        Demand {
            resources,
            labels: options.label_selector.clone(),
        }
    }

    fn submission(&self, spec: &LaunchSpec, package: &Package, id: String) -> JobSubmission {
        let program = format!(
            "./{}",
            self.shipped(spec)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let lease = [
            String::from("--listen"),
            String::from("0.0.0.0:0"),
            String::from("--lease-secs"),
            self.options.lease.as_secs().max(1).to_string(),
        ];
        let args: Vec<String> = match &self.options.relay {
            Some(relay) => lease
                .into_iter()
                .chain([String::from("--")])
                .chain(relay.command.iter().cloned())
                .collect(),
            None => spec.args.iter().cloned().chain(lease).collect(),
        };
        let options = &self.options;
        let mut job = JobSubmission::new(entrypoint_command(&program, &args))
            .submission_id(id)
            .num_cpus(options.num_cpus)
            .working_dir(package.uri())
            .env_var(
                wire::CLIENT_CERT_SHA256_ENV,
                self.identity.fingerprint().to_string(),
            )
            .metadata("cjm_plugin", spec.plugin.clone());
        if options.num_gpus > 0.0 {
            job = job.num_gpus(options.num_gpus);
        }
        if let Some(mb) = options.memory_mb {
            job = job.memory_bytes(mb.saturating_mul(1024 * 1024));
        }
        for (name, amount) in &options.resources {
            job = job.resource(name.clone(), *amount);
        }
        for (key, value) in &options.label_selector {
            job = job.label(key.clone(), value.clone());
        }
        for (key, value) in &spec.env {
            job = job.env_var(key.clone(), value.clone());
        }
        if !options.pip.is_empty() {
            job = job.pip(options.pip.iter().cloned());
        }
        job
    }
}

impl Placement for RayPlacement {
    fn describe(&self) -> String {
        format!("ray {}", self.client.address())
    }

    fn place<'a>(&'a self, spec: &'a LaunchSpec) -> PlaceFuture<'a> {
        Box::pin(async move {
            let failed = |source| ProxyError::Placement {
                plugin: spec.plugin.clone(),
                placement: self.describe(),
                source: Box::new(source),
            };
            if let Some(name) = spec.secret_env.first() {
                return Err(failed(PlacementError::SecretInJob { name: name.clone() }));
            }
            let program = self.shipped(spec);
            let package = tokio::task::spawn_blocking(move || Package::executable(&program))
                .await
                .map_err(|err| failed(PlacementError::Package(err.to_string())))?
                .map_err(|err| failed(PlacementError::Package(err.to_string())))?;
            self.client
                .upload(&package)
                .await
                .map_err(|err| failed(PlacementError::Ray(err)))?;
            let start = self.starts.fetch_add(1, Ordering::SeqCst).to_string();
            let fingerprint = self.identity.fingerprint().to_string();
            let id = submission_id(
                &format!("cjm-{}", spec.plugin),
                &[&fingerprint, &spec.plugin, &self.run, &start],
            );
            let job = self.submission(spec, &package, id.clone());
            self.client
                .submit(&job)
                .await
                .map_err(|err| failed(PlacementError::Ray(err)))?;

            let stopper: Stopper = {
                let client = self.client.clone();
                let id = id.clone();
                let limit = self.options.stop_timeout;
                Arc::new(move || {
                    let client = client.clone();
                    let id = id.clone();
                    Box::pin(async move {
                        match client.stop_until_gone(&id, limit).await {
                            Ok(job) => format!("Ray job {id} stopped by the host ({})", job.status),
                            Err(err) => {
                                tracing::warn!("{err}");
                                format!("Ray job {id} could not be stopped: {err}")
                            }
                        }
                    })
                })
            };
            // From here the job exists: whatever fails stops it (the worker's drop).
            let worker = RemoteWorker::new(Some(stopper));
            let waiting = spec.on_waiting.clone().map(|hook| {
                tokio::spawn(free_while_pending(
                    self.client.clone(),
                    id.clone(),
                    self.demand(),
                    hook,
                    self.options.pending_check,
                ))
            });
            let handshake = self
                .client
                .wait_for_handshake(&id, self.options.place_timeout)
                .await;
            if let Some(waiting) = waiting {
                waiting.abort();
            }
            let placed = handshake.map_err(|err| {
                worker.stop();
                failed(PlacementError::Ray(err))
            })?;
            let connector =
                PinnedConnector::new(&self.identity, placed.handshake.server_cert_sha256)
                    .map_err(|err| {
                        worker.stop();
                        failed(PlacementError::Tls(err))
                    })?
                    .connect_timeout(spec.start_timeout);
            let endpoint = Endpoint::Tls {
                host: placed.node_address.clone(),
                port: placed.handshake.port,
            };
            let transport = Transport::tls(connector, &endpoint, None);
            worker.renew_lease(
                transport.clone(),
                (self.options.lease / 3).max(Duration::from_secs(1)),
            );
            {
                let client = self.client.clone();
                let id = id.clone();
                let gone = worker.gone_sender();
                worker.follow(async move {
                    loop {
                        tokio::time::sleep(JOB_POLL).await;
                        match client.job(&id).await {
                            Ok(job) if job.status.is_terminal() => {
                                gone.mark_gone(format!(
                                    "its Ray job {id} ended: {}{}",
                                    job.status,
                                    job.message
                                        .map(|message| format!(" ({message})"))
                                        .unwrap_or_default()
                                ));
                                return;
                            }
                            Ok(_) => {}
                            Err(err) => tracing::debug!("Ray job {id}: {err}"),
                        }
                    }
                });
            }
            Ok(Placed {
                worker: Worker::Remote(worker),
                location: format!("ray job {id} on {}", placed.node_address),
                endpoint,
                transport,
                socket_folder: None,
                log_start: 0,
            })
        })
    }
}
