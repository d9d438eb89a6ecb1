//! `remote_exec_p50_us`: the manager's calls to a worker over pinned TLS on TCP
//! (attached to `cjm-echo --listen 127.0.0.1:0`, same machine), beside the local
//! worker's `exec_p50_us` (Unix socket) measured in the same run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use cjm_interface::remote::Handshake;
use cjm_manager::{CallArgs, CjmHome};
use serde_json::json;

use crate::measure::percentiles_us;
use crate::report::Results;
use crate::system::BenchHome;
use crate::Options;

pub async fn measure(options: &Options, results: &mut Results) -> Result<()> {
    if !options.wants(&["remote_exec_p50_us", "remote_exec_p99_us"]) {
        return Ok(());
    }
    let home = BenchHome::new(options, "remote", 0)?;
    let fingerprint = cjm_manager::host_tls_fingerprint(&CjmHome::at(&home.root))?;
    let mut worker = Command::new(options.bin_dir.join("cjm-echo"))
        .args(["--listen", "127.0.0.1:0"])
        .env(cjm_interface::wire::CLIENT_CERT_SHA256_ENV, &fingerprint)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start cjm-echo --listen")?;
    let outcome = async {
        let stdout = worker.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let handshake = loop {
            let Some(line) = lines.next().transpose()? else {
                bail!("cjm-echo --listen ended without a handshake");
            };
            if Handshake::is_candidate(&line) {
                break Handshake::parse_line(&line)?;
            }
        };
        let manifest = json!({
            "name": "echo-tls",
            "version": "0.1.0",
            "command": options.bin_dir.join("cjm-echo"),
            "attach": {
                "url": format!("https://127.0.0.1:{}", handshake.port),
                "server_fingerprint": handshake.server_cert_sha256.to_string(),
            },
        });
        std::fs::write(
            home.root.join("plugins/echo-tls.json"),
            manifest.to_string(),
        )?;
        let manager = home.manager();
        manager.load_plugin("echo-tls", None).await?;
        let calls = if options.quick { 2_000 } else { 20_000 };
        let mut samples = Vec::with_capacity(calls);
        for _ in 0..calls {
            let start = Instant::now();
            manager
                .execute_plugin("echo-tls", CallArgs::new().arg("hi"))
                .await?;
            samples.push(start.elapsed());
        }
        manager.shutdown().await;
        let (p50, p99) = percentiles_us(samples);
        results.insert("remote_exec_p50_us", p50, "us");
        results.insert("remote_exec_p99_us", p99, "us");
        Ok(())
    }
    .await;
    // An attached worker is let go by its host: this bench is its operator.
    let _ = worker.kill();
    let _ = worker.wait();
    outcome
}
