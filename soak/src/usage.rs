//! Resident memory and open descriptors of a process, from /proc.

use std::fmt;

use procfs_core::process::Status;
use procfs_core::FromRead;

/// One reading of a process's resources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub rss_kib: u64,
    pub fds: usize,
}

impl Usage {
    /// This process; `pid` for another. `None` if it is gone.
    pub fn of(pid: Option<u32>) -> Option<Usage> {
        let dir = match pid {
            Some(pid) => format!("/proc/{pid}"),
            None => String::from("/proc/self"),
        };
        let status = Status::from_file(format!("{dir}/status")).ok()?;
        let rss_kib = status.vmrss?;
        let fds = std::fs::read_dir(format!("{dir}/fd")).ok()?.count();
        Some(Usage { rss_kib, fds })
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RSS {:.1} MiB, {} fds",
            self.rss_kib as f64 / 1024.0,
            self.fds
        )
    }
}

/// Start and end readings of one process, and the limits they must keep.
#[derive(Debug)]
pub struct Drift {
    pub what: String,
    pub start: Usage,
    pub end: Usage,
}

impl Drift {
    pub fn rss_growth_kib(&self) -> i64 {
        self.end.rss_kib as i64 - self.start.rss_kib as i64
    }

    pub fn fd_growth(&self) -> i64 {
        self.end.fds as i64 - self.start.fds as i64
    }

    /// Problems, if the readings grew past the limits.
    pub fn check(&self, max_rss_growth_kib: i64, max_fd_growth: i64) -> Vec<String> {
        let mut problems = Vec::new();
        if self.rss_growth_kib() > max_rss_growth_kib {
            problems.push(format!(
                "{}: RSS grew by {} KiB (limit {max_rss_growth_kib} KiB)",
                self.what,
                self.rss_growth_kib()
            ));
        }
        if self.fd_growth() > max_fd_growth {
            problems.push(format!(
                "{}: open descriptors grew by {} (limit {max_fd_growth})",
                self.what,
                self.fd_growth()
            ));
        }
        problems
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<22} start {:<26} end {:<26} RSS {:+} KiB, fds {:+}",
            self.what,
            self.start.to_string(),
            self.end.to_string(),
            self.rss_growth_kib(),
            self.fd_growth()
        )
    }
}
