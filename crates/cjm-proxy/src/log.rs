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
///
/// The log holds the plugin's output, which may be anything it was given: the file
/// is made 0600 (and put back to 0600 if it was made otherwise before), in a folder
/// made 0700. An existing folder of this user's is closed to others as well, unless
/// it is meant to be shared (sticky, as `/tmp` is) or belongs to someone else.
pub(crate) fn open_for_run(path: &Path, header: &str) -> io::Result<(File, u64)> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        let in_folder = |what: &'static str| {
            move |err: io::Error| {
                io::Error::new(
                    err.kind(),
                    format!("cannot {what} its folder {}: {err}", dir.display()),
                )
            }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(in_folder("create"))?;
        close_folder_to_others(dir).map_err(in_folder("close to others"))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to a file made now; one made before (by an older release,
    // under the default umask) is closed to others here. On the open file, so that
    // what is checked is what is written to.
    close_file_to_others(&file)?;
    writeln!(
        file,
        "==== {} {header} ====",
        utc_timestamp(SystemTime::now())
    )?;
    let run_start = file.seek(SeekFrom::End(0))?;
    Ok((file, run_start))
}

/// Group and others lose every right on `file`, unless it is not ours to change.
fn close_file_to_others(file: &File) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = file.metadata()?;
    if meta.mode() & 0o077 == 0 || meta.uid() != rustix::process::geteuid().as_raw() {
        return Ok(());
    }
    file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o700))
}

/// Group and others lose every right on the folder `dir`, if it is this user's and
/// not a shared one (sticky: `/tmp`, where closing it would break everyone else).
fn close_folder_to_others(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(dir)?;
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.mode() & 0o077 == 0 || sticky || meta.uid() != rustix::process::geteuid().as_raw() {
        return Ok(());
    }
    tracing::debug!(
        "{} could be read by others (mode {:o}); made 0700",
        dir.display(),
        meta.mode() & 0o777
    );
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(meta.mode() & 0o700))
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

/// The last `count` lines of `text`, an attributed worker line
/// (`cjm_interface::log_line`) shown as the text it carries.
pub(crate) fn last_lines(text: &str, count: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(count)..]
        .iter()
        .map(|line| readable(line))
        .collect::<Vec<_>>()
        .join("\n")
}

fn readable(line: &str) -> String {
    use cjm_interface::log_line::{LogLine, OUTPUT};
    match LogLine::parse(line) {
        Some(record) if record.level == OUTPUT => record.msg,
        Some(record) => format!("{} {}: {}", record.level, record.target, record.msg),
        None => line.to_owned(),
    }
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

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_log_is_private_to_its_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home/logs/p.log");
        open_for_run(&path, "run").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("home/logs")), 0o700);
        assert_eq!(mode(&dir.path().join("home")), 0o700);
    }

    #[test]
    fn a_log_made_open_before_is_closed_to_others_on_the_next_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let path = logs.join("p.log");
        // As an older release left them, under umask 022.
        std::fs::create_dir(&logs).unwrap();
        std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(&path, "old output\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_for_run(&path, "run").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&logs), 0o700);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("old output\n"));
    }

    #[test]
    fn a_shared_sticky_folder_is_left_open() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let path = shared.join("p.log");
        open_for_run(&path, "run").unwrap();
        assert_eq!(mode(&shared), 0o1777);
        assert_eq!(mode(&path), 0o600);
    }
}
