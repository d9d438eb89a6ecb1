//! What the tests of published plugins share: `cjm-ctl` run as a user runs it in a
//! home, and the workers still running out of that home's environments.

use std::process::{Command, Output};

use crate::common::*;

pub fn ctl(home: &TestHome, args: &[&str]) -> Output {
    Command::new(CTL)
        .args(args)
        .env("CJM_HOME", home.path())
        .current_dir(home.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The processes running a Python worker out of `home`'s environments.
pub fn workers_of(home: &TestHome) -> Vec<u32> {
    let envs = home.path().join("envs").to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // A zombie is gone already; only its parent's reaping is left.
            String::from_utf8_lossy(&cmdline).contains(&envs) && !stat.contains(") Z ")
        })
        .collect()
}
