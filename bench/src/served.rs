//! A `cjm-ctl serve` of the benchmark's own: the release binary next to the plugins,
//! on a home of the benchmark's, stopped (SIGTERM, then SIGKILL) when dropped, so that
//! a failed measurement leaves no daemon behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cjm_daemon::DaemonClient;
use rustix::process::{kill_process, Pid, Signal};

/// How long the daemon has to answer its health check after it starts.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// How long it has to stop after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A running daemon.
#[derive(Debug)]
pub struct Served {
    child: Child,
    pub client: DaemonClient,
    /// Its CJM_HOME, absolute.
    pub home: PathBuf,
}

impl Served {
    /// `cjm-ctl serve [extra...]` on `home` (CJM_HOME, and its working folder, so that
    /// no `./.cjm` of the caller's is searched), once it answers `/api/health`.
    pub async fn start(cjm_ctl: &Path, home: &Path, extra: &[&str]) -> Result<Self> {
        // Absolute: the daemon runs in `home`, where a relative CJM_HOME would nest.
        let home = &std::fs::canonicalize(home)
            .with_context(|| format!("the daemon's home {}", home.display()))?;
        let log = File::create(home.join("daemon.log"))
            .with_context(|| format!("cannot create {}/daemon.log", home.display()))?;
        let child = Command::new(cjm_ctl)
            .arg("serve")
            .args(extra)
            .env("CJM_HOME", home)
            .current_dir(home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {} serve", cjm_ctl.display()))?;
        let mut served = Served {
            child,
            client: DaemonClient::new(socket(home)),
            home: home.clone(),
        };
        served.wait_ready().await?;
        Ok(served)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("cjm-ctl serve ended before it served: {status} (see its daemon.log)");
            }
            if self.client.health(Duration::from_secs(1)).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "cjm-ctl serve did not answer on {} within {:?}",
                    self.client.socket().display(),
                    READY_LIMIT
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // An orderly stop first, so that the daemon stops its workers itself.
        let pid = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw);
        if let Some(pid) = pid {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon's socket in `home`, where `cjm-ctl` looks for it.
pub fn socket(home: &Path) -> PathBuf {
    home.join("daemon.sock")
}
