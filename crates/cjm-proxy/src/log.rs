//! The worker's log: its stdout and stderr appended to one file per plugin, each start
//! marked by a header line, and the tail of the current run read back for errors.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::SystemTime;

/// Lines of log quoted in a start or crash error.
pub(crate) const TAIL_LINES: usize = 20;
/// Bytes read from the end of a log at most, however long its lines.
const TAIL_BYTES: u64 = 16 * 1024;

/// Open the log for appending, write the start header and return the file and the
/// offset where this run's output begins.
pub(crate) fn open_for_run(path: &Path, header: &str) -> io::Result<(File, u64)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot create its folder {}: {err}", dir.display()),
            )
        })?;
    }
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(
        file,
        "==== {} {header} ====",
        utc_timestamp(SystemTime::now())
    )?;
    let run_start = file.seek(SeekFrom::End(0))?;
    Ok((file, run_start))
}

/// The last `lines` lines written since `from` (the current run's output).
pub(crate) fn tail_since(path: &Path, from: u64, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let end = file.seek(SeekFrom::End(0)).unwrap_or(0);
    let start = from.max(end.saturating_sub(TAIL_BYTES));
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.take(end - start).read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    last_lines(&String::from_utf8_lossy(&bytes), lines)
}

/// The last `count` lines of `text`.
pub(crate) fn last_lines(text: &str, count: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(count)..].join("\n")
}

/// `2026-11-25T14:08:38Z`.
pub(crate) fn utc_timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn timestamps_are_utc_iso8601() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let at = UNIX_EPOCH + Duration::from_secs(1_795_615_718);
        assert_eq!(utc_timestamp(at), "2026-11-25T14:08:38Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn tail_shows_only_the_current_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/p.log");
        let (mut first, _) = open_for_run(&path, "run 1").unwrap();
        writeln!(first, "old output").unwrap();
        let (mut second, from) = open_for_run(&path, "run 2").unwrap();
        for i in 0..30 {
            writeln!(second, "line {i}").unwrap();
        }
        let tail = tail_since(&path, from, 3);
        assert_eq!(tail, "line 27\nline 28\nline 29");
        assert!(!tail_since(&path, from, 100).contains("old output"));
        let whole = std::fs::read_to_string(&path).unwrap();
        assert!(
            whole.contains("run 1 ====")
                && whole.contains("old output")
                && whole.contains("run 2 ====")
        );
    }
}
