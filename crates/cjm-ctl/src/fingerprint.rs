use std::process::ExitCode;

use anyhow::Result;
use argh::FromArgs;
use cjm_manager::CjmHome;

use crate::out::outln;

/// Print this host's TLS fingerprint (made and kept in $CJM_HOME/tls on first use):
/// give it to a worker you run elsewhere as CJM_CLIENT_CERT_SHA256, so that this host,
/// and only it, may call that worker.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "tls-fingerprint")]
pub struct FingerprintCommand {}

pub fn run(_: FingerprintCommand) -> Result<ExitCode> {
    let home = CjmHome::from_env()?;
    outln!("{}", cjm_manager::host_tls_fingerprint(&home)?)?;
    Ok(ExitCode::SUCCESS)
}
