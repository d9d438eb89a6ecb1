//! File-backed arguments: written to temporary files before a call, replaced by their
//! paths in the request, and removed when the call is over, however it ended.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cjm_interface::{Arg, CallArgs, ConfigMap};
use serde_json::Value;

use crate::ProxyError;

static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

/// Temporary files of one call; removed on drop (success, error or cancellation).
#[derive(Debug, Default)]
pub(crate) struct TempFiles {
    paths: Vec<PathBuf>,
    keep: bool,
}

impl TempFiles {
    /// Leave the files in place (the caller asked to keep them).
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for path in &self.paths {
            if let Err(err) = std::fs::remove_file(path) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("cannot remove temporary file {}: {err}", path.display());
                }
            }
        }
    }
}

/// Turn a call's arguments into JSON, writing file-backed ones into `dir`.
pub(crate) fn materialize(
    plugin: &str,
    call: CallArgs,
    dir: &Path,
) -> Result<(Vec<Value>, ConfigMap, TempFiles), ProxyError> {
    let mut files = TempFiles::default();
    let mut convert = |arg: Arg| -> Result<Value, ProxyError> {
        match arg {
            Arg::Value(value) => Ok(value),
            Arg::File(backed) => {
                let path = dir.join(format!(
                    "cjm-{plugin}-{}-{}{}",
                    std::process::id(),
                    NEXT_FILE.fetch_add(1, Ordering::Relaxed),
                    backed.file_suffix()
                ));
                // Registered before writing, so a half-written file is removed too.
                files.paths.push(path.clone());
                // Only this user's: the folder is often the shared /tmp, and the
                // file holds a call's input. The worker runs as the same user.
                let written = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .and_then(|file| {
                        let mut out = BufWriter::with_capacity(1 << 20, file);
                        backed.write_to(&mut out)?;
                        out.flush()
                    });
                written.map_err(|source| ProxyError::TempFile {
                    plugin: plugin.to_owned(),
                    path: path.clone(),
                    source,
                })?;
                Ok(Value::String(path.to_string_lossy().into_owned()))
            }
        }
    };
    let args = call
        .args
        .into_iter()
        .map(&mut convert)
        .collect::<Result<Vec<_>, _>>()?;
    let kwargs = call
        .kwargs
        .into_iter()
        .map(|(name, arg)| convert(arg).map(|value| (name, value)))
        .collect::<Result<ConfigMap, _>>()?;
    Ok((args, kwargs, files))
}

#[cfg(test)]
mod tests {
    use std::io;

    use cjm_interface::FileBacked;
    use serde_json::json;

    use super::*;

    #[test]
    fn files_travel_as_paths_and_are_removed_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        let call = CallArgs::new()
            .arg("plain")
            .file_kwarg("file_path", String::from("hello file"));
        let (args, kwargs, files) = materialize("echo", call, dir.path()).unwrap();
        assert_eq!(args, vec![json!("plain")]);
        let path = PathBuf::from(kwargs["file_path"].as_str().unwrap());
        assert!(path.is_absolute() && path.extension().unwrap() == "txt");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello file");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "a call's input is only its user's");
        drop(files);
        assert!(!path.exists());
    }

    struct Failing;

    impl FileBacked for Failing {
        fn write_to(&self, out: &mut dyn io::Write) -> io::Result<()> {
            out.write_all(b"partial")?;
            Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
        }
    }

    #[test]
    fn a_failed_write_is_reported_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let call = CallArgs::new()
            .file_arg(b"first".to_vec())
            .file_arg(Failing);
        let err = materialize("echo", call, dir.path()).unwrap_err();
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("disk full"), "{err}");
        assert!(err.to_string().contains("file-backed argument"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
