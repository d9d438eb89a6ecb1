//! `cargo xtask ray-e2e`: workers placed by a real Ray cluster.
//!
//! Makes a venv with `ray[default]` from PyPI once (`target/ray-venv`, ~1 GB, a few
//! minutes), starts a head and a second node on this machine with token
//! authentication (the second at 127.0.0.2 with 2 declared GPUs, 24000 `gpu_vram_mb`
//! and the label `cjm-pool=gpu`), runs `tests/tests/ray.rs` against them with a
//! release `cjm-echo` to ship, and stops Ray whatever happened (`ray stop --force`,
//! which stops every Ray process of this user on the machine).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{cargo, run, workspace_root};

/// The Ray the facts in the notes were measured with.
const RAY: &str = "ray[default]==2.60.0";

pub(crate) fn ray_e2e() -> Result<()> {
    let started = Instant::now();
    let root = workspace_root()?;
    let venv = root.join("target/ray-venv");
    let ray = ray_venv(&venv)?;
    let venv_ready = started.elapsed();

    run(cargo()
        .current_dir(&root)
        .args(["build", "--release", "--package", "cjm-echo"]))?;
    let plugin = shippable(
        &root.join("target/release/cjm-echo"),
        &root.join("target/ray-e2e"),
    )?;
    // Built before Ray starts, so that Ray's time is the test's alone.
    run(cargo().current_dir(&root).args([
        "test",
        "--package",
        "cjm-tests",
        "--test",
        "ray",
        "--no-run",
    ]))?;

    let token = random_hex(32)?;
    let temp = std::env::temp_dir().join(format!("cjm-ray-{}", std::process::id()));
    let cluster = RayCluster {
        ray: ray.clone(),
        token: token.clone(),
    };
    let ports = [free_port()?, free_port()?, free_port()?, free_port()?];
    let [gcs, dashboard, head_agent, gpu_agent] = ports.map(|port| port.to_string());
    let cluster_started = Instant::now();
    let outcome = (|| {
        cluster.ray_start(&[
            "--head",
            "--port",
            &gcs,
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            &dashboard,
            "--dashboard-agent-listen-port",
            &head_agent,
            "--num-cpus",
            "2",
            "--labels",
            "cjm-pool=cpu",
            "--temp-dir",
            &temp.to_string_lossy(),
        ])?;
        // A second node on this machine, at another loopback address, so that "the
        // worker's node" is an address of its own. Its dashboard agent needs a port of
        // its own too: the head's agent listens on 127.0.0.1 as well.
        cluster.ray_start(&[
            "--address",
            &format!("127.0.0.1:{gcs}"),
            "--node-ip-address",
            "127.0.0.2",
            "--dashboard-agent-listen-port",
            &gpu_agent,
            "--num-cpus",
            "2",
            "--num-gpus",
            "2",
            "--resources",
            r#"{"gpu_vram_mb": 24000}"#,
            "--labels",
            "cjm-pool=gpu",
        ])?;
        let cluster_ready = cluster_started.elapsed();
        let tests_started = Instant::now();
        run(cargo()
            .current_dir(&root)
            .args(["test", "--package", "cjm-tests", "--test", "ray", "--"])
            // One at a time, in name order: the raylet test kills a node, last.
            .args(["--test-threads=1", "--nocapture"])
            .env("RAY_ADDRESS", format!("http://127.0.0.1:{dashboard}"))
            .env("CJM_RAY_TOKEN", &token)
            .env("CJM_RAY_PLUGIN", &plugin))?;
        Ok::<_, anyhow::Error>((cluster_ready, tests_started.elapsed()))
    })();
    let stop_started = Instant::now();
    let stopped = cluster.stop();
    let _ = std::fs::remove_dir_all(&temp);
    let (cluster_ready, tests) = outcome?;
    stopped?;
    eprintln!(
        "ray-e2e: {:.0?} in all (venv {:.0?}, cluster start {:.0?}, tests {:.0?}, stop {:.0?})",
        started.elapsed(),
        venv_ready,
        cluster_ready,
        tests,
        stop_started.elapsed()
    );
    Ok(())
}

/// The venv's `ray`, installing it first if needed.
fn ray_venv(venv: &Path) -> Result<PathBuf> {
    let ray = venv.join("bin/ray");
    let installed = Command::new(&ray)
        .arg("--version")
        .output()
        .map(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).contains("2.60.0"))
        .unwrap_or(false);
    if installed {
        return Ok(ray);
    }
    let system_python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    run(Command::new(system_python).arg("-m").arg("venv").arg(venv))
        .context("cannot create a Python venv for Ray")?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        RAY,
    ]))
    .context("cannot install Ray from PyPI")?;
    Ok(ray)
}

/// A stripped copy of `binary` in `dir` (debug line tables make a release build
/// several times larger, and every byte is uploaded); the binary itself when `strip`
/// is missing.
fn shippable(binary: &Path, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let copy = dir.join(binary.file_name().context("the plugin has no file name")?);
    std::fs::copy(binary, &copy)
        .with_context(|| format!("cannot copy {} to {}", binary.display(), copy.display()))?;
    match Command::new("strip").arg(&copy).status() {
        Ok(status) if status.success() => Ok(copy),
        _ => {
            eprintln!(
                "strip failed or is missing: shipping {} as built",
                binary.display()
            );
            Ok(binary.to_owned())
        }
    }
}

struct RayCluster {
    ray: PathBuf,
    token: String,
}

impl RayCluster {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.ray);
        command
            .env("RAY_AUTH_MODE", "token")
            .env("RAY_AUTH_TOKEN", &self.token)
            // Ray reads RAY_ADDRESS itself; a caller's must not redirect it.
            .env_remove("RAY_ADDRESS");
        command
    }

    fn ray_start(&self, args: &[&str]) -> Result<()> {
        let out = self
            .command()
            .arg("start")
            .args(args)
            .arg("--disable-usage-stats")
            .output()
            .context("cannot run ray start")?;
        if !out.status.success() {
            bail!(
                "ray start {} failed: {}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn stop(&self) -> Result<()> {
        let status = self
            .command()
            .args(["stop", "--force"])
            .output()
            .context("cannot run ray stop")?
            .status;
        if !status.success() {
            bail!("ray stop --force failed: {status}");
        }
        Ok(())
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut buffer))
        .context("cannot read /dev/urandom")?;
    Ok(buffer.iter().map(|byte| format!("{byte:02x}")).collect())
}
