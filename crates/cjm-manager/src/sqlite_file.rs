//! The host's SQLite files in `CJM_HOME` (the job journal, the diagnostics, the host
//! store), opened one way: the user's alone (0600 in a 0700 folder, as they hold
//! plugins' output and configurations), and shared by several hosts at once (a
//! daemon and `cjm-ctl exec`, the original's workers) through WAL and a busy timeout.
//! Each file's own error type names the file; this module says which step failed.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

/// How long a writer waits for another host's transaction before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A step of opening a file that failed, and why.
#[derive(Debug)]
pub(crate) struct OpenFailure {
    pub what: &'static str,
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

fn failure<E>(what: &'static str) -> impl FnOnce(E) -> OpenFailure
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| OpenFailure {
        what,
        source: Box::new(source),
    }
}

/// Open an existing file (or create it, with `flags`) that other hosts may hold.
pub(crate) fn open_shared(path: &Path, flags: OpenFlags) -> Result<Connection, OpenFailure> {
    let connection = Connection::open_with_flags(path, flags).map_err(failure("cannot open it"))?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(failure("cannot set its busy timeout"))?;
    Ok(connection)
}

/// Create (or open) the file private to the user, for writing, in WAL mode, with
/// `schema` applied.
pub(crate) fn open_private(path: &Path, schema: &str) -> Result<Connection, OpenFailure> {
    use cjm_metadata::private::{create_private_parent, make_private, private_file_options};
    create_private_parent(path).map_err(failure("cannot create its folder"))?;
    let file = private_file_options()
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(failure("cannot open it"))?;
    make_private(&file).map_err(failure("cannot make it private (0600)"))?;
    let connection = open_shared(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    let set_up = || {
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .and_then(|()| connection.execute_batch(schema))
    };
    // Where waiting could deadlock (another connection turning a new file to WAL,
    // or two upgrading their reads to writes), SQLite answers "busy" at once,
    // without its busy handler: two hosts opening one new file together met it. The
    // set-up is idempotent, so it is tried again, for as long as the busy timeout.
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match set_up() {
            Ok(()) => return Ok(connection),
            Err(err) if is_busy(&err) && Instant::now() < deadline => {
                std::thread::sleep(SET_UP_RETRY);
            }
            Err(err) => return Err(failure("cannot set it up")(err)),
        }
    }
}

/// How long a set-up that found the file busy waits before trying again.
const SET_UP_RETRY: Duration = Duration::from_millis(10);

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_file_is_private_in_a_private_folder_and_says_which_step_failed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/host.sqlite3");
        let connection = open_private(&path, "CREATE TABLE t (x INTEGER);").unwrap();
        connection.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        let broken = open_private(&path, "NOT SQL").unwrap_err();
        assert_eq!(broken.what, "cannot set it up");
        let missing =
            open_shared(&dir.path().join("absent"), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap_err();
        assert_eq!(missing.what, "cannot open it");
    }

    #[test]
    fn hosts_opening_one_new_file_at_once_all_set_it_up() {
        const HOSTS: usize = 6;
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("journal.sqlite3");
            let start = std::sync::Arc::new(std::sync::Barrier::new(HOSTS));
            let opened: Vec<_> = (0..HOSTS)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        open_private(&path, "CREATE TABLE IF NOT EXISTS t (x INTEGER);")
                            .map(|connection| connection.execute("INSERT INTO t VALUES (1)", []))
                    })
                })
                .collect();
            for host in opened {
                match host.join().unwrap() {
                    Ok(Ok(1)) => {}
                    Ok(other) => panic!("round {round}: {other:?}"),
                    Err(failed) => panic!("round {round}: {}: {}", failed.what, failed.source),
                }
            }
        }
    }
}
