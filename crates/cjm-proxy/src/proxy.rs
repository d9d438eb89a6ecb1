//! [`RemotePluginProxy`]: one running worker, seen from the host.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cjm_interface::wire::{
    self, CancelRequest, CancelResponse, ErrorResponse, HealthResponse, ProgressResponse,
    StatsResponse,
};
use cjm_interface::{json, CallArgs, ConfigMap};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Response;
use parking_lot::Mutex;
use rustix::process::Signal;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::buffers::BufferPool;
use crate::endpoint::{Endpoint, PrivateFolder};
use crate::files::TempFiles;
use crate::launch::{LaunchSpec, ListenMode};
use crate::log::{self, TAIL_LINES};
use crate::stream::ChunkStream;
use crate::transport::{self, Outgoing, Transport};
use crate::worker::Worker;
use crate::ProxyError;

mod enveloped;
mod metrics;

/// What the successor's (cjm-substrate's) worker adds to `/health`: the release it
/// runs and its interpreter.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct PythonRuntime {
    /// The `cjm_substrate` version the worker imports.
    #[serde(default)]
    pub substrate_version: Option<String>,
    /// The worker's `sys.executable`.
    #[serde(default)]
    pub python_executable: Option<String>,
}

pub use enveloped::{Answered, CallTarget};
pub use metrics::CallMetrics;

/// How long `/cleanup` may take before the worker is terminated regardless.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a terminated worker has to exit before it is killed.
const TERMINATE_GRACE: Duration = Duration::from_secs(3);
/// Readiness retries (only while the worker binds its own port) start fast and back
/// off to this interval.
const MAX_READY_RETRY: Duration = Duration::from_millis(25);
/// How many times a worker that found its port taken is started again.
const PORT_TAKEN_RETRIES: usize = 4;
/// `is_alive` gives a worker this long to answer `/health`.
const ALIVE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A plugin running in its own worker process, driven over HTTP on loopback.
///
/// Dropping the proxy kills the worker's process group; [`shutdown`](Self::shutdown)
/// is the orderly way (plugin cleanup first).
#[derive(Debug)]
pub struct RemotePluginProxy {
    plugin: String,
    version: String,
    /// What the worker's `/health` says of the Python it runs, if it is the
    /// successor's (cjm-substrate) worker.
    python_runtime: PythonRuntime,
    log_path: PathBuf,
    log_start: u64,
    temp_dir: PathBuf,
    endpoint: Endpoint,
    /// A Unix socket's private folder, removed once the worker is stopped.
    socket_folder: Mutex<Option<PrivateFolder>>,
    worker: Worker,
    /// Where the worker runs, in words (`local`, `ray job X on node Y`).
    location: String,
    /// The worker's pid where it runs, as its `/health` says.
    worker_pid: u32,
    transport: Transport,
    /// Large answers are read into buffers kept here (see `buffers.rs`).
    buffers: BufferPool,
    runtime: tokio::runtime::Handle,
    stopped: AtomicBool,
}

impl RemotePluginProxy {
    /// Start the worker and wait until it answers `/health`.
    ///
    /// Fails at once (not at the timeout) when the worker exits during start-up, with
    /// the end of its log. A worker that binds its own port and finds it taken (the
    /// port was free when chosen, but another process bound it first) is started
    /// again on a fresh port, a few times, within the same start timeout.
    pub async fn start(spec: LaunchSpec) -> Result<Self, ProxyError> {
        let started = Instant::now();
        let mut retries_left = PORT_TAKEN_RETRIES;
        loop {
            let result = Self::start_once(&spec, started).await;
            if let Err(ProxyError::StartFailed { log_tail, .. }) = &result {
                if spec.listen == ListenMode::WorkerBinds
                    && retries_left > 0
                    && port_was_taken(log_tail)
                {
                    retries_left -= 1;
                    tracing::debug!(
                        "plugin {}: its port was taken before the worker bound it; \
                         starting it again on another",
                        spec.plugin
                    );
                    continue;
                }
            }
            return result;
        }
    }

    async fn start_once(spec: &LaunchSpec, started: Instant) -> Result<Self, ProxyError> {
        let placed = spec.placement.place(spec).await?;
        let mut proxy = RemotePluginProxy {
            plugin: spec.plugin.clone(),
            version: String::new(),
            python_runtime: PythonRuntime::default(),
            log_path: spec.log_path.clone(),
            log_start: placed.log_start,
            temp_dir: spec.temp_dir.clone(),
            endpoint: placed.endpoint,
            socket_folder: Mutex::new(placed.socket_folder),
            worker_pid: placed.worker.local_pid().unwrap_or_default(),
            worker: placed.worker,
            location: placed.location,
            transport: placed.transport,
            buffers: BufferPool::default(),
            runtime: tokio::runtime::Handle::current(),
            stopped: AtomicBool::new(false),
        };
        // A placement may wait long for resources elsewhere (a Ray job pending, its
        // environment being installed), under its own limit: the start timeout is for
        // the worker's own start, from when it is placed. Retries after a taken port
        // still count from the first start.
        let ready_from = if proxy.is_local() {
            started
        } else {
            Instant::now()
        };
        let (health, python_runtime) = proxy.wait_ready(spec, ready_from).await?;
        proxy.version = health.version;
        proxy.python_runtime = python_runtime;
        proxy.worker_pid = health.pid;
        tracing::debug!(
            "plugin {} ready on {} ({}, pid {}) after {:?}",
            proxy.plugin,
            proxy.endpoint,
            proxy.location,
            proxy.worker_pid,
            started.elapsed()
        );
        Ok(proxy)
    }

    async fn wait_ready(
        &self,
        spec: &LaunchSpec,
        started: Instant,
    ) -> Result<(HealthResponse, PythonRuntime), ProxyError> {
        let deadline = tokio::time::Instant::from_std(started + spec.start_timeout);
        let mut retry = Duration::from_millis(1);
        loop {
            let attempt = async {
                let response = self
                    .transport
                    .send(Outgoing::get(wire::PATH_HEALTH))
                    .await?;
                if !response.status().is_success() {
                    return Err(format!("health answered {}", response.status()));
                }
                let body = transport::read_body(response).await?;
                let health = serde_json::from_slice::<HealthResponse>(&body)
                    .map_err(|err| format!("health answer: {err}"))?;
                // Fields only the successor's worker sends; a value of another type
                // is left out rather than refusing a worker that answers.
                let python_runtime =
                    serde_json::from_slice::<PythonRuntime>(&body).unwrap_or_default();
                // A port the worker binds itself may have been taken by another
                // worker, which would answer in its place: only ours counts.
                // (A worker elsewhere is reached at the address it was placed at.)
                if spec.listen == ListenMode::WorkerBinds
                    && self
                        .worker
                        .local_pid()
                        .is_some_and(|leader| !in_process_group(health.pid, leader))
                {
                    return Err(format!(
                        "{} is answered by pid {}, not by this worker",
                        self.endpoint, health.pid
                    ));
                }
                Ok((health, python_runtime))
            };
            tokio::select! {
                biased;
                status = self.worker.exited() => {
                    return Err(ProxyError::StartFailed {
                        plugin: self.plugin.clone(),
                        status,
                        log_tail: self.log_tail(TAIL_LINES),
                    });
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.kill();
                    return Err(ProxyError::StartTimeout {
                        plugin: self.plugin.clone(),
                        waited: spec.start_timeout,
                        log_tail: self.log_tail(TAIL_LINES),
                    });
                }
                result = attempt => match result {
                    Ok(health) => return Ok(health),
                    Err(reason) => {
                        // With an inherited socket the worker is listening before it
                        // runs, so a failure means it is going down: the exit branch
                        // reports it. A worker binding its own port may not be there yet.
                        tracing::trace!("plugin {} not ready yet: {reason}", self.plugin);
                        if spec.listen == ListenMode::WorkerBinds || !self.worker.has_exited() {
                            tokio::select! {
                                biased;
                                _ = self.worker.exited() => {}
                                () = tokio::time::sleep(retry) => {}
                            }
                            retry = (retry * 2).min(MAX_READY_RETRY);
                        }
                    }
                },
            }
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.plugin
    }

    /// The version the worker reported at start.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What the worker's `/health` said at start of the Python it runs (the
    /// successor's worker says it; others leave it empty).
    pub fn python_runtime(&self) -> &PythonRuntime {
        &self.python_runtime
    }

    /// Process id of a local worker (the leader of its process group); `None` for a
    /// worker elsewhere (see [`worker_pid`](Self::worker_pid)).
    pub fn pid(&self) -> Option<u32> {
        self.worker.local_pid()
    }

    /// The worker's process id where it runs (on this machine or another), as its
    /// `/health` said.
    pub fn worker_pid(&self) -> u32 {
        self.worker_pid
    }

    /// Where the worker runs, in words: `local`, `attached at https://host:port`,
    /// `ray job ID on NODE`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Whether the host can stop the worker: false for one it attached to, which
    /// someone else runs and which stopping only lets go (a call it is running goes on).
    pub fn owns_worker(&self) -> bool {
        self.worker.is_owned()
    }

    /// Whether the worker is a process of this machine.
    pub fn is_local(&self) -> bool {
        self.worker.local_pid().is_some()
    }

    /// The worker's TCP port; `None` when it listens on a Unix socket.
    pub fn port(&self) -> Option<u16> {
        match self.endpoint {
            Endpoint::Tcp { port } | Endpoint::Tls { port, .. } => Some(port),
            Endpoint::Unix { .. } => None,
        }
    }

    /// How to reach the worker.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The log the worker's output is appended to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines this run of the worker wrote to its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log::tail_since(&self.log_path, self.log_start, lines)
    }

    /// Whether the worker process has ended.
    pub fn has_exited(&self) -> bool {
        self.worker.has_exited()
    }

    /// Neither exited nor stopped (killed, shut down) by the host.
    pub fn is_running(&self) -> bool {
        !self.has_exited() && !self.stopped.load(Ordering::SeqCst)
    }

    /// How the worker process ended, such as "was killed by signal 9"; `None` while
    /// it runs.
    pub fn exit_description(&self) -> Option<String> {
        self.worker.exit_description()
    }

    /// How the worker ended, in one word for counting: `exited`, `signal` or `lost`
    /// (see [`exit_description`](Self::exit_description) for the words); `None`
    /// while it runs.
    pub fn exit_cause(&self) -> Option<&'static str> {
        self.worker.exit_cause()
    }

    /// A future that resolves when the worker has ended, however it ended. It holds
    /// nothing of the proxy: a watcher awaiting it never keeps a worker alive that
    /// the proxy's drop would stop.
    pub fn exit_notice(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.worker.exit_notice()
    }

    /// Whether the host stopped the worker ([`shutdown`](Self::shutdown) or
    /// [`kill`](Self::kill)), as opposed to its ending on its own or at someone
    /// else's hand.
    pub fn stopped_by_host(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Running and answering `/health`.
    pub async fn is_alive(&self) -> bool {
        if self.has_exited() || self.stopped.load(Ordering::SeqCst) {
            return false;
        }
        let probe = self.request_json::<HealthResponse>(Outgoing::get(wire::PATH_HEALTH));
        matches!(
            tokio::time::timeout(ALIVE_PROBE_TIMEOUT, probe).await,
            Ok(Ok(_))
        )
    }

    /// `GET /health`: status, pid, name and version.
    pub async fn health(&self) -> Result<HealthResponse, ProxyError> {
        self.request_json(Outgoing::get(wire::PATH_HEALTH)).await
    }

    /// Configure the plugin. A refused configuration is a [`ProxyError::Http`] with
    /// status 400 and the worker's reason; the plugin keeps its previous one.
    pub async fn initialize(&self, config: ConfigMap) -> Result<(), ProxyError> {
        self.send_config(config, None).await
    }

    /// [`initialize`](Self::initialize) with a configuration the caller has already
    /// validated against the schema whose fingerprint is `schema_fingerprint`: a
    /// native worker whose own schema is that one does not validate it again (see
    /// [`wire::CONFIG_CHECKED_HEADER`]).
    pub async fn initialize_checked(
        &self,
        config: ConfigMap,
        schema_fingerprint: &str,
    ) -> Result<(), ProxyError> {
        // A fingerprint that cannot be a header value is simply not claimed.
        let claim = HeaderValue::from_str(schema_fingerprint)
            .ok()
            .map(|value| (HeaderName::from_static(wire::CONFIG_CHECKED_HEADER), value));
        self.send_config(config, claim).await
    }

    async fn send_config(
        &self,
        config: ConfigMap,
        claim: Option<(HeaderName, HeaderValue)>,
    ) -> Result<(), ProxyError> {
        let mut body = Vec::new();
        json::write_object(&mut body, &config);
        let mut request = Outgoing::post(wire::PATH_INITIALIZE, Bytes::from(body));
        if let Some((name, value)) = claim {
            request = request.header(name, value);
        }
        self.request_json::<Value>(request).await.map(drop)
    }

    /// Run the plugin once. File-backed arguments are written to temporary files for
    /// the duration of the call.
    pub async fn execute(&self, call: CallArgs) -> Result<Value, ProxyError> {
        self.execute_as(call, None).await
    }

    /// [`execute`](Self::execute) under the call id `call_id`, by which
    /// [`cancel`](Self::cancel) and [`progress`](Self::progress) name it.
    pub async fn execute_as(
        &self,
        call: CallArgs,
        call_id: Option<&str>,
    ) -> Result<Value, ProxyError> {
        Ok(self.execute_reporting(call, call_id).await?.0)
    }

    /// [`execute_as`](Self::execute_as), with the call's last progress report where
    /// the worker sends it along ([`wire::PROGRESS_HEADER`]).
    pub async fn execute_reporting(
        &self,
        call: CallArgs,
        call_id: Option<&str>,
    ) -> Result<(Value, Option<ProgressResponse>), ProxyError> {
        let (body, _files) = self.prepare_call(call).await?;
        let request = with_call_id(Outgoing::post(wire::PATH_EXECUTE, body), call_id);
        let mut progress = None;
        let value = self
            .request_json_reading(request, |headers| {
                progress = headers
                    .get(wire::PROGRESS_HEADER)
                    .and_then(|value| serde_json::from_slice(value.as_bytes()).ok());
            })
            .await?;
        Ok((value, progress))
    }

    /// [`execute`](Self::execute) for callers outside any async runtime. The proxy
    /// must have been started on a multi-threaded runtime that is still running.
    pub fn execute_blocking(&self, call: CallArgs) -> Result<Value, ProxyError> {
        self.block_on(self.execute(call))
    }

    /// Run the plugin, receiving its results chunk by chunk. Dropping the stream
    /// closes the connection, and the worker stops producing.
    pub async fn execute_stream(&self, call: CallArgs) -> Result<ChunkStream, ProxyError> {
        self.execute_stream_as(call, None).await
    }

    /// [`execute_stream`](Self::execute_stream) under the call id `call_id`.
    pub async fn execute_stream_as(
        &self,
        call: CallArgs,
        call_id: Option<&str>,
    ) -> Result<ChunkStream, ProxyError> {
        self.execute_stream_enveloped(call, call_id, None).await
    }

    /// [`execute_stream_as`](Self::execute_stream_as) with `envelope` beside the
    /// arguments (see [`call_enveloped`](Self::call_enveloped)): a job's stream tells
    /// the worker which job it is for.
    pub async fn execute_stream_enveloped(
        &self,
        call: CallArgs,
        call_id: Option<&str>,
        envelope: Option<&cjm_interface::envelope::CallEnvelope>,
    ) -> Result<ChunkStream, ProxyError> {
        let (body, files) = self
            .enveloped_body(CallTarget::Execute, call, envelope)
            .await?;
        let request = with_call_id(Outgoing::post(wire::PATH_EXECUTE_STREAM, body), call_id);
        let response = self.send(request).await?;
        let response = self
            .check_status(wire::PATH_EXECUTE_STREAM, response)
            .await?;
        Ok(ChunkStream::new(
            self.plugin.clone(),
            response.into_body(),
            self.worker.clone(),
            files,
            self.log_path.clone(),
            self.log_start,
        ))
    }

    /// `POST /cancel`: ask call `call_id` (or, with `None`, every call in flight) to
    /// stop. A worker without `/cancel` (the original 0.0.20) answers
    /// `not_supported`. Ours answers `remembered` for a call it has not seen yet
    /// (the cancel overtook the call): it will refuse that call when it arrives.
    pub async fn cancel(&self, call_id: Option<&str>) -> Result<CancelResponse, ProxyError> {
        let request = CancelRequest {
            call_id: call_id.map(str::to_owned),
        };
        let body = serde_json::to_vec(&request).unwrap_or_default();
        cancel_answer(
            self.request_json(Outgoing::post(wire::PATH_CANCEL, Bytes::from(body)))
                .await,
        )
    }

    /// `GET /progress`: how far call `call_id` has got (`None`: the call the worker
    /// reported on last). With `after` and `wait`, our worker answers once a report
    /// numbered above `after` exists, or after `wait`; the original answers at once.
    /// A worker without `/progress` (0.0.20) gives [`ProxyError::Http`] 404.
    pub async fn progress(
        &self,
        call_id: Option<&str>,
        after: Option<u64>,
        wait: Option<Duration>,
    ) -> Result<ProgressResponse, ProxyError> {
        let mut query = Vec::new();
        if let Some(id) = call_id {
            query.push(format!("call={}", percent_encode(id)));
        }
        if let Some(after) = after {
            query.push(format!("after={after}"));
        }
        if let Some(wait) = wait {
            query.push(format!("wait_ms={}", wait.as_millis()));
        }
        let mut request = Outgoing::get(wire::PATH_PROGRESS);
        if !query.is_empty() {
            request = request.query(query.join("&"));
        }
        self.request_json(request).await
    }

    /// `GET /config_schema`: the JSON Schema of the configuration (`{}` if none).
    pub async fn config_schema(&self) -> Result<Value, ProxyError> {
        self.request_json(Outgoing::get(wire::PATH_CONFIG_SCHEMA))
            .await
    }

    /// `GET /config`: the configuration in force (`{}` if none).
    pub async fn current_config(&self) -> Result<Value, ProxyError> {
        self.request_json(Outgoing::get(wire::PATH_CONFIG)).await
    }

    /// Memory of the worker's process tree and its CPU load.
    pub async fn stats(&self) -> Result<StatsResponse, ProxyError> {
        self.request_json(Outgoing::get(wire::PATH_STATS)).await
    }

    /// `POST /get_system_status`: a monitor plugin's figures of the machine, from its
    /// own route (0.0.46's, served by our workers' monitor hooks too). A worker whose
    /// plugin is no monitor answers 404, one whose monitor left it unimplemented
    /// 501; a 0.0.20 worker has no such route (404).
    pub async fn get_system_status(&self) -> Result<Value, ProxyError> {
        self.request_json(Outgoing::post(wire::PATH_GET_SYSTEM_STATUS, Bytes::new()))
            .await
    }

    /// Stop the worker in order: the plugin's `/cleanup`, then SIGTERM to its process
    /// group, then SIGKILL if it has not exited in time. Safe to call more than once.
    /// A worker the host does not own is only let go: its plugin is not cleaned up
    /// under whoever runs it (and a cleanup would wait for the calls it is running).
    pub async fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        if !self.has_exited() && self.owns_worker() {
            // Not through `send`: the proxy already counts as stopped for callers.
            let cleanup = async {
                let response = self
                    .until_exit(
                        wire::PATH_CLEANUP,
                        self.transport
                            .send(Outgoing::post(wire::PATH_CLEANUP, Bytes::new())),
                    )
                    .await?;
                self.check_status(wire::PATH_CLEANUP, response)
                    .await
                    .map(drop)
            };
            match tokio::time::timeout(CLEANUP_TIMEOUT, cleanup).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::warn!("{err}"),
                Err(_) => tracing::warn!(
                    "plugin {}: cleanup took longer than {CLEANUP_TIMEOUT:?}; terminating",
                    self.plugin
                ),
            }
        }
        self.worker.stop(Signal::TERM);
        if !self.worker.wait_exit(TERMINATE_GRACE).await {
            tracing::warn!(
                "plugin {}: worker did not exit within {TERMINATE_GRACE:?} of SIGTERM; killing it",
                self.plugin
            );
            self.worker.stop(Signal::KILL);
            self.worker.wait_exit(TERMINATE_GRACE).await;
        }
        // Whatever the plugin started and left behind in the group goes too.
        self.worker.stop(Signal::KILL);
        self.remove_socket_folder();
    }

    /// Kill the worker's process group at once, without cleanup.
    pub fn kill(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.worker.stop(Signal::KILL);
        self.remove_socket_folder();
    }

    fn remove_socket_folder(&self) {
        let folder = self.socket_folder.lock().take();
        drop(folder);
    }

    fn block_on<T>(
        &self,
        future: impl std::future::Future<Output = Result<T, ProxyError>>,
    ) -> Result<T, ProxyError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(ProxyError::BlockingInAsync {
                plugin: self.plugin.clone(),
            });
        }
        self.runtime.block_on(future)
    }

    async fn prepare_call(&self, call: CallArgs) -> Result<(Bytes, TempFiles), ProxyError> {
        self.enveloped_body(CallTarget::Execute, call, None).await
    }

    pub(crate) async fn request_json<T: DeserializeOwned>(
        &self,
        request: Outgoing,
    ) -> Result<T, ProxyError> {
        self.request_json_reading(request, |_| {}).await
    }

    /// [`request_json`](Self::request_json), showing `headers` the answer's headers.
    async fn request_json_reading<T: DeserializeOwned>(
        &self,
        request: Outgoing,
        headers: impl FnOnce(&hyper::HeaderMap),
    ) -> Result<T, ProxyError> {
        let mut unused = CallMetrics::default();
        self.request_json_measured(request, headers, &mut unused)
            .await
    }

    /// As `request_json_reading`, measuring the call into `metrics` (its bytes out
    /// are the caller's to set).
    async fn request_json_measured<T: DeserializeOwned>(
        &self,
        request: Outgoing,
        headers: impl FnOnce(&hyper::HeaderMap),
        metrics: &mut CallMetrics,
    ) -> Result<T, ProxyError> {
        let endpoint = request.endpoint;
        let posted = Instant::now();
        let response = self.send(request).await;
        metrics.post_secs = posted.elapsed().as_secs_f64();
        let response = response?;
        headers(response.headers());
        let response = self.check_status(endpoint, response).await;
        metrics.post_secs = posted.elapsed().as_secs_f64();
        let response = response?;
        let mut buffer = self.buffers.take();
        let read = self
            .until_exit(endpoint, transport::read_body_into(response, &mut buffer))
            .await;
        let post = posted.elapsed();
        metrics.post_secs = post.as_secs_f64();
        let parsed = read.and_then(|()| {
            let decoding = Instant::now();
            let parsed =
                serde_json::from_slice(&buffer).map_err(|err| ProxyError::InvalidResponse {
                    plugin: self.plugin.clone(),
                    endpoint,
                    reason: err.to_string(),
                });
            metrics.answered(buffer.len(), post, decoding.elapsed());
            parsed
        });
        self.buffers.give_back(buffer, &self.runtime);
        parsed
    }

    async fn send(&self, request: Outgoing) -> Result<Response<Incoming>, ProxyError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(ProxyError::NotRunning {
                plugin: self.plugin.clone(),
            });
        }
        let endpoint = request.endpoint;
        self.until_exit(endpoint, self.transport.send(request))
            .await
    }

    /// Run a transport step, but end it the moment the worker process exits: a dead
    /// worker is an error at once, never a hang.
    async fn until_exit<T>(
        &self,
        endpoint: &'static str,
        step: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, ProxyError> {
        if self.worker.has_exited() {
            return Err(ProxyError::NotRunning {
                plugin: self.plugin.clone(),
            });
        }
        let failure = tokio::select! {
            biased;
            result = step => match result {
                Ok(value) => return Ok(value),
                Err(reason) => reason,
            },
            status = self.worker.exited() => return Err(self.died(endpoint, status)),
        };
        match self
            .worker
            .exit_within(crate::worker::EXIT_NOTICE_WAIT)
            .await
        {
            Some(status) => Err(self.died(endpoint, status)),
            None => Err(ProxyError::Transport {
                plugin: self.plugin.clone(),
                endpoint,
                reason: failure,
            }),
        }
    }

    fn died(&self, endpoint: &'static str, status: Option<std::process::ExitStatus>) -> ProxyError {
        if self.stopped.load(Ordering::SeqCst) {
            return ProxyError::NotRunning {
                plugin: self.plugin.clone(),
            };
        }
        ProxyError::WorkerDied {
            plugin: self.plugin.clone(),
            endpoint,
            status,
            log_tail: self.log_tail(TAIL_LINES),
        }
    }

    /// Pass a success through; turn an error status into [`ProxyError::Http`] with the
    /// worker's `detail`.
    async fn check_status(
        &self,
        endpoint: &'static str,
        response: Response<Incoming>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = self
            .until_exit(endpoint, transport::read_body(response))
            .await?;
        let no_detail = || {
            let text = String::from_utf8_lossy(&body);
            if text.trim().is_empty() {
                status.canonical_reason().unwrap_or("no detail").to_owned()
            } else {
                text.chars().take(2000).collect()
            }
        };
        let (detail, kind, job_error) = match serde_json::from_slice::<ErrorResponse>(&body) {
            Ok(error) => {
                // The original 0.0.46 sends only `_job_error` with a 500.
                let detail = match (&error.job_error, error.detail.is_empty()) {
                    (Some(job_error), true) => job_error.message.clone(),
                    (None, true) => no_detail(),
                    (_, false) => error.detail,
                };
                (detail, error.kind, error.job_error)
            }
            Err(_) => (no_detail(), None, None),
        };
        if status == hyper::StatusCode::CONFLICT {
            return Err(ProxyError::Cancelled {
                plugin: self.plugin.clone(),
                endpoint,
                detail,
            });
        }
        Err(ProxyError::Http {
            plugin: self.plugin.clone(),
            endpoint,
            status: status.as_u16(),
            detail,
            kind,
            job_error: job_error.map(Box::new),
        })
    }
}

impl Drop for RemotePluginProxy {
    fn drop(&mut self) {
        if !self.stopped.load(Ordering::SeqCst) {
            tracing::debug!(
                "plugin {}: proxy dropped without shutdown; killing its worker",
                self.plugin
            );
            self.worker.stop(Signal::KILL);
        }
    }
}

/// `request` naming its call, when the caller gave the call an id.
fn with_call_id(request: Outgoing, call_id: Option<&str>) -> Outgoing {
    match call_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        Some(id) => request.header(HeaderName::from_static(wire::CALL_ID_HEADER), id),
        None => request,
    }
}

/// `text` safe in a query value: everything but unreserved characters escaped.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether a failed start's log says the port could not be bound because another
/// process had it (uvicorn: "[Errno 98] error while attempting to bind on address
/// ..: address already in use").
fn port_was_taken(log_tail: &str) -> bool {
    log_tail
        .to_ascii_lowercase()
        .contains("address already in use")
}

/// Whether `pid` is the worker `leader` or runs in its process group (a worker
/// started through a wrapper answers with its child's pid).
fn in_process_group(pid: u32, leader: u32) -> bool {
    use procfs_core::FromRead;
    if pid == leader {
        return true;
    }
    procfs_core::process::Stat::from_file(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| u32::try_from(stat.pgrp) == Ok(leader))
}

/// What a worker's answer to `/cancel` means: a 404 of ours for a call it has not
/// seen (`kind` unknown_call) is a cancel it took; any other 404 is for the route
/// (a worker without `/cancel`).
fn cancel_answer(answer: Result<CancelResponse, ProxyError>) -> Result<CancelResponse, ProxyError> {
    match answer {
        Err(ProxyError::Http {
            status: 404,
            kind: Some(kind),
            detail,
            ..
        }) if kind == wire::KIND_UNKNOWN_CALL => Ok(CancelResponse {
            status: String::from(wire::CANCEL_STATUS_REMEMBERED),
            detail: Some(detail),
        }),
        Err(ProxyError::Http { status: 404, .. }) => Ok(CancelResponse {
            status: String::from(wire::CANCEL_STATUS_NOT_SUPPORTED),
            detail: None,
        }),
        answer => answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_404_for_an_unknown_call_is_a_cancel_taken() {
        let not_found = |kind: Option<&str>, detail: &str| {
            Err(ProxyError::Http {
                plugin: String::from("p"),
                endpoint: wire::PATH_CANCEL,
                status: 404,
                detail: detail.to_owned(),
                kind: kind.map(str::to_owned),
                job_error: None,
            })
        };
        let taken = cancel_answer(not_found(Some(wire::KIND_UNKNOWN_CALL), "remembered")).unwrap();
        assert_eq!(taken.status, wire::CANCEL_STATUS_REMEMBERED);
        assert_eq!(taken.detail.as_deref(), Some("remembered"));
        // FastAPI's 404 for a route the original 0.0.20 lacks, and ours for a path.
        for (kind, detail) in [(None, "Not Found"), (None, "no endpoint /cancel")] {
            let answer = cancel_answer(not_found(kind, detail)).unwrap();
            assert_eq!(answer.status, wire::CANCEL_STATUS_NOT_SUPPORTED);
        }
        let other = cancel_answer(not_found(Some("invalid_argument"), "x")).unwrap();
        assert_eq!(other.status, wire::CANCEL_STATUS_NOT_SUPPORTED);
        let asked = CancelResponse {
            status: String::from(wire::CANCEL_STATUS_CANCELLED),
            detail: None,
        };
        assert_eq!(cancel_answer(Ok(asked.clone())).unwrap(), asked);
    }

    #[test]
    fn recognises_a_taken_port_in_uvicorns_words() {
        assert!(port_was_taken(
            "ERROR: [Errno 98] error while attempting to bind on address \
             ('127.0.0.1', 4242): Address already in use"
        ));
        assert!(!port_was_taken("ModuleNotFoundError: No module named 'x'"));
    }

    #[test]
    fn a_process_belongs_to_its_own_group_only() {
        let own = std::process::id();
        assert!(in_process_group(own, own));
        // No process group is led by a pid that cannot exist.
        assert!(!in_process_group(own, u32::MAX));
        assert!(!in_process_group(u32::MAX, own));
    }
}
