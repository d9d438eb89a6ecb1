//! A `working_dir` package for Ray: a zip of the files a worker needs (a native
//! plugin's binary), named by the hash of its content, so that the same files make
//! the same package and are uploaded once.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

/// Ray's prefix of package names, which its package store expects.
const RAY_PKG_PREFIX: &str = "_ray_pkg_";

/// A zip for Ray's package store, with its content-derived name.
#[derive(Clone, PartialEq, Eq)]
pub struct Package {
    name: String,
    bytes: Bytes,
}

impl std::fmt::Debug for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Package")
            .field("name", &self.name)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// Why a package could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// A file to pack could not be read.
    #[error("cannot read {path} to pack it for Ray")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A path that has no file name, or one that is not UTF-8.
    #[error("{path} has no usable file name")]
    Name {
        /// The path.
        path: PathBuf,
    },
    /// The zip could not be written.
    #[error("cannot write the Ray package")]
    Zip(#[source] zip::result::ZipError),
}

impl Package {
    /// A package holding one executable, at its file name at the package's top
    /// (the entrypoint runs it as `./<file name>`).
    pub fn executable(binary: &Path) -> Result<Self, PackageError> {
        let name = binary
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| PackageError::Name {
                path: binary.to_owned(),
            })?;
        let content = std::fs::read(binary).map_err(|source| PackageError::Read {
            path: binary.to_owned(),
            source,
        })?;
        Package::from_entries(&[(name, &content, 0o755)])
    }

    /// A package of `(name, content, Unix mode)` entries, in that order. Everything
    /// that could differ between two runs is fixed (times, order, compression level),
    /// so the same entries give the same bytes and the same name.
    pub fn from_entries(entries: &[(&str, &[u8], u32)]) -> Result<Self, PackageError> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, content, mode) in entries {
            let options = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Deflated)
                .compression_level(Some(6))
                // zip's own default is the current time when its `time` feature is on.
                .last_modified_time(DateTime::default())
                // Ray restores the mode bits when it unpacks: the binary stays
                // executable.
                .unix_permissions(*mode)
                .large_file(content.len() >= u32::MAX as usize);
            zip.start_file(*name, options).map_err(PackageError::Zip)?;
            zip.write_all(content)
                .map_err(|err| PackageError::Zip(err.into()))?;
        }
        let bytes = zip.finish().map_err(PackageError::Zip)?.into_inner();
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let hex: String = digest.as_ref()[..20]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Ok(Package {
            name: format!("{RAY_PKG_PREFIX}{hex}.zip"),
            bytes: Bytes::from(bytes),
        })
    }

    /// `_ray_pkg_<hash>.zip`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `gcs://_ray_pkg_<hash>.zip`, for `runtime_env.working_dir`.
    pub fn uri(&self) -> String {
        format!("gcs://{}", self.name)
    }

    /// The zip's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_same_content_gives_the_same_package() {
        let first = Package::from_entries(&[("worker", b"\x7fELF binary", 0o755)]).unwrap();
        let again = Package::from_entries(&[("worker", b"\x7fELF binary", 0o755)]).unwrap();
        assert_eq!(first, again);
        let other = Package::from_entries(&[("worker", b"\x7fELF binarz", 0o755)]).unwrap();
        assert_ne!(first.name(), other.name());
        assert!(first.name().starts_with("_ray_pkg_") && first.name().ends_with(".zip"));
        assert_eq!(first.uri(), format!("gcs://{}", first.name()));
    }

    #[test]
    fn an_executable_keeps_its_name_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cjm-echo");
        std::fs::write(&path, b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        let package = Package::executable(&path).unwrap();
        let mut archive = zip::ZipArchive::new(Cursor::new(package.bytes().to_vec())).unwrap();
        assert_eq!(archive.len(), 1);
        let entry = archive.by_index(0).unwrap();
        assert_eq!(entry.name(), "cjm-echo");
        assert_eq!(entry.unix_mode().map(|mode| mode & 0o777), Some(0o755));
        assert_eq!(entry.compression(), CompressionMethod::Deflated);

        let missing = Package::executable(&dir.path().join("absent")).unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot read ")
                && missing.to_string().ends_with("absent to pack it for Ray"),
            "{missing}"
        );
    }
}
