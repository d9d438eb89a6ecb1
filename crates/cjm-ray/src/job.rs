//! The Jobs API's messages: what a submission says, what a job looks like.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /api/jobs/`: a job to run. Built with [`JobSubmission::new`] and the setters;
/// fields left unset are not sent (Ray refuses fields it does not know, so nothing
/// else is ever sent either).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSubmission {
    entrypoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    submission_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint_num_cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint_num_gpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint_memory: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    entrypoint_resources: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    entrypoint_label_selector: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "RuntimeEnv::is_empty")]
    runtime_env: RuntimeEnv,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
}

/// The job's `runtime_env`: what Ray sets up before the entrypoint runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeEnv {
    /// A package URI (`gcs://_ray_pkg_<hash>.zip`, see [`Package`](crate::Package)),
    /// unpacked as the entrypoint's working folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Environment variables of the entrypoint: readable by anyone who can read the
    /// job, so never a secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
    /// Python packages to install (for Python plugins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pip: Vec<String>,
}

impl RuntimeEnv {
    fn is_empty(&self) -> bool {
        self.working_dir.is_none() && self.env_vars.is_empty() && self.pip.is_empty()
    }
}

impl JobSubmission {
    /// A job running `entrypoint` (a shell command line on the node: build it with
    /// [`entrypoint_command`]).
    pub fn new(entrypoint: impl Into<String>) -> Self {
        JobSubmission {
            entrypoint: entrypoint.into(),
            submission_id: None,
            entrypoint_num_cpus: None,
            entrypoint_num_gpus: None,
            entrypoint_memory: None,
            entrypoint_resources: BTreeMap::new(),
            entrypoint_label_selector: BTreeMap::new(),
            runtime_env: RuntimeEnv::default(),
            metadata: BTreeMap::new(),
        }
    }

    /// The id Ray files the job under; the same id submitted twice is one job (see
    /// [`submission_id`]).
    pub fn submission_id(mut self, id: impl Into<String>) -> Self {
        self.submission_id = Some(id.into());
        self
    }

    /// CPUs reserved for the entrypoint.
    pub fn num_cpus(mut self, cpus: f64) -> Self {
        self.entrypoint_num_cpus = Some(cpus);
        self
    }

    /// GPUs reserved for the entrypoint (Ray sets `CUDA_VISIBLE_DEVICES` to them).
    pub fn num_gpus(mut self, gpus: f64) -> Self {
        self.entrypoint_num_gpus = Some(gpus);
        self
    }

    /// Memory reserved for the entrypoint, in bytes.
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.entrypoint_memory = Some(bytes);
        self
    }

    /// An amount of a custom resource (such as `gpu_vram_mb`), as nodes declare with
    /// `ray start --resources`.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        self.entrypoint_resources.insert(name.into(), amount);
        self
    }

    /// Run only on nodes with this label (`ray start --labels key=value`).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.entrypoint_label_selector
            .insert(key.into(), value.into());
        self
    }

    /// The package URI to unpack as the working folder.
    pub fn working_dir(mut self, uri: impl Into<String>) -> Self {
        self.runtime_env.working_dir = Some(uri.into());
        self
    }

    /// An environment variable of the entrypoint (never a secret: see [`RuntimeEnv`]).
    pub fn env_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.runtime_env.env_vars.insert(name.into(), value.into());
        self
    }

    /// Python packages to install first.
    pub fn pip(mut self, packages: impl IntoIterator<Item = String>) -> Self {
        self.runtime_env.pip.extend(packages);
        self
    }

    /// A metadata entry, shown with the job.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The submission id, if one was set.
    pub fn id(&self) -> Option<&str> {
        self.submission_id.as_deref()
    }

    /// The entrypoint command line.
    pub fn entrypoint(&self) -> &str {
        &self.entrypoint
    }
}

/// A job's state, as Ray names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Not started: waiting for resources or for its runtime_env.
    Pending,
    /// The entrypoint runs.
    Running,
    /// Stopped on request.
    Stopped,
    /// The entrypoint exited with 0.
    Succeeded,
    /// The entrypoint failed, or its set-up did.
    Failed,
    /// A state this client does not know (a newer Ray).
    #[serde(other)]
    Unknown,
}

impl JobStatus {
    /// Whether the job can never run again (`STOPPED`, `SUCCEEDED`, `FAILED`).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Stopped | JobStatus::Succeeded | JobStatus::Failed
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobStatus::Pending => "PENDING",
            JobStatus::Running => "RUNNING",
            JobStatus::Stopped => "STOPPED",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Unknown => "an unknown state",
        })
    }
}

/// `GET /api/jobs/{id}`: what Ray knows of a job (the fields used here; others are
/// ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct JobDetails {
    /// The submission id.
    #[serde(default)]
    pub submission_id: Option<String>,
    /// Ray's driver job id: `null` for a job whose entrypoint is not a Ray driver (as
    /// a worker's is not).
    #[serde(default)]
    pub job_id: Option<String>,
    /// Its state.
    pub status: JobStatus,
    /// The command line.
    #[serde(default)]
    pub entrypoint: String,
    /// Ray's words on the state (a failure's log tail among them).
    #[serde(default)]
    pub message: Option<String>,
    /// Ray's class of failure (`JOB_ENTRYPOINT_COMMAND_ERROR`, ..).
    #[serde(default)]
    pub error_type: Option<String>,
    /// When it started, ms since the epoch.
    #[serde(default)]
    pub start_time: Option<u64>,
    /// When it ended, ms since the epoch.
    #[serde(default)]
    pub end_time: Option<u64>,
    /// The submission's metadata (Ray adds nothing here).
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// `http://<node ip>:<agent port>` of the node running the entrypoint, once it
    /// runs.
    #[serde(default)]
    pub driver_agent_http_address: Option<String>,
    /// The id of the node running the entrypoint, once it runs.
    #[serde(default)]
    pub driver_node_id: Option<String>,
    /// The entrypoint's exit code, once it exited.
    #[serde(default)]
    pub driver_exit_code: Option<i32>,
}

impl JobDetails {
    /// The address of the node the entrypoint runs on (from
    /// `driver_agent_http_address`), where its worker listens; `None` before it runs.
    pub fn node_address(&self) -> Option<String> {
        let address = self.driver_agent_http_address.as_deref()?;
        let authority = address
            .split_once("://")
            .map_or(address, |(_, rest)| rest)
            .split('/')
            .next()?;
        let host = match authority.strip_prefix('[') {
            // [v6]:port
            Some(rest) => rest.split(']').next()?,
            None => authority
                .rsplit_once(':')
                .map_or(authority, |(host, _)| host),
        };
        (!host.is_empty()).then(|| host.to_owned())
    }
}

/// The entrypoint running `program` with `args`, for Ray's shell (Ray runs the
/// entrypoint with `sh -c`): each word single-quoted, so nothing in them is expanded,
/// and `exec`, so that the worker replaces the shell and receives Ray's stop signal
/// itself.
pub fn entrypoint_command(program: &str, args: &[String]) -> String {
    let mut command = String::from("exec ");
    command.push_str(&shell_quote(program));
    for arg in args {
        command.push(' ');
        command.push_str(&shell_quote(arg));
    }
    command
}

fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&byte));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A submission id made of `parts` (say a host's id, the plugin's name and a start
/// count): the same parts give the same id, so that a submission retried after a lost
/// answer finds the job the first one made; different parts give another. Ray keeps
/// ids of finished jobs, so a new start of the same plugin needs a new part.
pub fn submission_id(prefix: &str, parts: &[&str]) -> String {
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finish();
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{prefix}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_submission_sends_only_what_was_set() {
        let plain = serde_json::to_value(JobSubmission::new("exec ./w")).unwrap();
        assert_eq!(plain, json!({"entrypoint": "exec ./w"}));
        let full = JobSubmission::new("exec ./w")
            .submission_id("cjm-echo-1")
            .num_cpus(1.0)
            .num_gpus(1.0)
            .memory_bytes(1 << 30)
            .resource("gpu_vram_mb", 4000.0)
            .label("cjm-pool", "gpu")
            .working_dir("gcs://_ray_pkg_ab.zip")
            .env_var("CJM_CLIENT_CERT_SHA256", "00")
            .metadata("cjm_plugin", "echo");
        assert_eq!(
            serde_json::to_value(full).unwrap(),
            json!({
                "entrypoint": "exec ./w",
                "submission_id": "cjm-echo-1",
                "entrypoint_num_cpus": 1.0,
                "entrypoint_num_gpus": 1.0,
                "entrypoint_memory": 1073741824u64,
                "entrypoint_resources": {"gpu_vram_mb": 4000.0},
                "entrypoint_label_selector": {"cjm-pool": "gpu"},
                "runtime_env": {
                    "working_dir": "gcs://_ray_pkg_ab.zip",
                    "env_vars": {"CJM_CLIENT_CERT_SHA256": "00"}
                },
                "metadata": {"cjm_plugin": "echo"}
            })
        );
    }

    #[test]
    fn job_details_read_ray_260s_shape() {
        // As Ray 2.60 answered GET /api/jobs/{id} for a running worker.
        let details: JobDetails = serde_json::from_value(json!({
            "type": "SUBMISSION", "job_id": null, "submission_id": "probe-2",
            "driver_info": null, "status": "RUNNING", "entrypoint": "exec ./w",
            "message": "Job is currently running.", "error_type": null,
            "start_time": 1796295717230u64, "end_time": null, "metadata": null,
            "runtime_env": null, "driver_agent_http_address": "http://127.0.0.2:52366",
            "driver_node_id": "a7e765a1", "driver_exit_code": null
        }))
        .unwrap();
        assert_eq!(details.status, JobStatus::Running);
        assert_eq!(details.node_address().as_deref(), Some("127.0.0.2"));
        let v6 = JobDetails {
            driver_agent_http_address: Some(String::from("http://[fd00::2]:52365")),
            ..details.clone()
        };
        assert_eq!(v6.node_address().as_deref(), Some("fd00::2"));
        let newer: JobStatus = serde_json::from_value(json!("PAUSED")).unwrap();
        assert_eq!(newer, JobStatus::Unknown);
        assert!(!newer.is_terminal());
    }

    #[test]
    fn entrypoints_quote_every_word() {
        let command = entrypoint_command(
            "./cjm-echo",
            &[
                String::from("--listen"),
                String::from("0.0.0.0:0"),
                String::from("it's $HOME"),
                String::new(),
            ],
        );
        assert_eq!(
            command,
            r"exec ./cjm-echo --listen 0.0.0.0:0 'it'\''s $HOME' ''"
        );
    }

    #[test]
    fn submission_ids_are_stable_and_distinct() {
        let first = submission_id("cjm-echo", &["host-1", "echo", "1"]);
        assert_eq!(first, submission_id("cjm-echo", &["host-1", "echo", "1"]));
        assert_ne!(first, submission_id("cjm-echo", &["host-1", "echo", "2"]));
        assert_ne!(
            submission_id("x", &["ab", "c"]),
            submission_id("x", &["a", "bc"])
        );
        assert!(first.starts_with("cjm-echo-"), "{first}");
        assert_eq!(submission_id("a b/c", &[]).split_at(6).0, "a-b-c-");
    }
}
