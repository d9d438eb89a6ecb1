use std::fmt;
use std::path::PathBuf;

/// A manifest that could not be used, with the file it came from (when there was one).
#[derive(Debug)]
pub struct ManifestError {
    pub path: Option<PathBuf>,
    pub kind: ManifestErrorKind,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum ManifestErrorKind {
    Read(std::io::Error),
    Json(serde_json::Error),
    /// Valid JSON that is not a usable manifest.
    Invalid(String),
}

impl ManifestError {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        ManifestError {
            path: None,
            kind: ManifestErrorKind::Invalid(reason.into()),
        }
    }

    pub(crate) fn at(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// The reason alone, without the file.
    pub fn reason(&self) -> String {
        match &self.kind {
            ManifestErrorKind::Read(err) => format!("cannot read: {err}"),
            ManifestErrorKind::Json(err) => format!("not valid JSON: {err}"),
            ManifestErrorKind::Invalid(reason) => reason.clone(),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "manifest {}: {}", path.display(), self.reason()),
            None => write!(f, "manifest: {}", self.reason()),
        }
    }
}

impl std::error::Error for ManifestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ManifestErrorKind::Read(err) => Some(err),
            ManifestErrorKind::Json(err) => Some(err),
            ManifestErrorKind::Invalid(_) => None,
        }
    }
}
