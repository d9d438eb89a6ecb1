//! The worker's own I/O over a task call, for its task account's `io`, as the
//! successor's worker (cjm-substrate 0.0.74) reports it and its host turns into a
//! job's `io_*` metrics: `/proc/self/io`'s bytes that reached the block layer and
//! bytes asked for. Process-wide, as theirs are: calls running at once in one worker
//! share the counters.

use procfs_core::process::Io;
use procfs_core::FromRead;
use serde_json::{Map, Value};

/// The counters when a call started; `None` where `/proc/self/io` cannot be read
/// (another OS, a hardened kernel): the account then carries no `io`, as theirs.
pub(crate) struct IoMark(Option<Io>);

pub(crate) fn mark() -> IoMark {
    IoMark(read())
}

fn read() -> Option<Io> {
    Io::from_file("/proc/self/io").ok()
}

impl IoMark {
    /// What the worker read and wrote since the mark, under the successor's names.
    pub(crate) fn since(&self) -> Option<Value> {
        let before = self.0.as_ref()?;
        let after = read()?;
        let counters = [
            ("read_bytes", before.read_bytes, after.read_bytes),
            ("write_bytes", before.write_bytes, after.write_bytes),
            (
                "cancelled_write_bytes",
                before.cancelled_write_bytes,
                after.cancelled_write_bytes,
            ),
            ("rchar", before.rchar, after.rchar),
            ("wchar", before.wchar, after.wchar),
        ];
        let io: Map<String, Value> = counters
            .into_iter()
            .map(|(name, then, now)| (name.to_owned(), Value::from(now.saturating_sub(then))))
            .collect();
        Some(Value::Object(io))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn the_bytes_a_call_reads_are_counted() {
        let file = tempfile_with(256 * 1024);
        let mark = mark();
        let mut read_back = Vec::new();
        std::fs::File::open(&file)
            .unwrap()
            .read_to_end(&mut read_back)
            .unwrap();
        let io = mark.since().expect("/proc/self/io is readable on Linux");
        let mut names: Vec<&str> = io.as_object().unwrap().keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "cancelled_write_bytes",
                "rchar",
                "read_bytes",
                "wchar",
                "write_bytes"
            ]
        );
        assert!(
            io["rchar"].as_u64().unwrap() >= read_back.len() as u64,
            "{io}"
        );
        std::fs::remove_file(file).unwrap();
    }

    fn tempfile_with(bytes: usize) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "cjm-io-counters-{}-{}",
            std::process::id(),
            cjm_interface::random_hex(8).unwrap()
        ));
        std::fs::write(&path, vec![b'x'; bytes]).unwrap();
        path
    }
}
