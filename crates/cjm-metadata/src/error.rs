use std::path::{Path, PathBuf};

/// A manifest that could not be used, with the file it came from (when there was one).
///
/// It displays as `manifest <path>: <reason>`, the reason including what the cause
/// said (the I/O or JSON error); for that reason it has no
/// [`source`](std::error::Error::source), so that a chain printer says the cause
/// once. The cause itself is in [`kind`](Self::kind) for callers that look.
#[derive(Debug, thiserror::Error)]
#[error("manifest{}: {kind}", shown_path(path.as_deref()))]
#[non_exhaustive]
pub struct ManifestError {
    /// The manifest file; `None` for text parsed without one
    /// ([`Manifest::from_json`](crate::Manifest::from_json)).
    pub path: Option<PathBuf>,
    /// What was wrong with it.
    pub kind: ManifestErrorKind,
}

/// What was wrong with a manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestErrorKind {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    /// The text is not JSON: a syntax error, an early end, or nesting deeper than
    /// the parser's recursion limit.
    #[error("not valid JSON: {0}")]
    Json(serde_json::Error),
    /// Well-formed JSON that is not a usable manifest: the reason, such as `no
    /// "name" field`, or a value of the wrong type.
    #[error("{0}")]
    Invalid(String),
}

fn shown_path(path: Option<&Path>) -> String {
    path.map(|path| format!(" {}", path.display()))
        .unwrap_or_default()
}

impl ManifestError {
    pub(crate) fn new(kind: ManifestErrorKind) -> Self {
        ManifestError { path: None, kind }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        ManifestError::new(ManifestErrorKind::Invalid(reason.into()))
    }

    pub(crate) fn at(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// The reason alone, without the file: for reports that name the file
    /// themselves.
    pub fn reason(&self) -> String {
        self.kind.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::{validate_name, HomeError};

    /// Every clause of the chain once: no cause is both named and returned.
    fn assert_said_once(err: &(dyn Error + 'static)) -> String {
        let chain = cjm_interface::ErrorChain(err);
        assert_eq!(chain.repeated_clause(), None, "in {chain}");
        chain.to_string()
    }

    #[test]
    fn every_cause_is_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent.json");
        let read = crate::Manifest::load(&absent).unwrap_err();
        let text = assert_said_once(&read);
        assert!(text.starts_with("manifest "), "{text}");
        assert!(text.contains("absent.json: cannot read: "), "{text}");

        let json = crate::Manifest::from_json("{\"name\": ").unwrap_err();
        let text = assert_said_once(&json);
        assert!(text.starts_with("manifest: not valid JSON: EOF"), "{text}");
        assert!(matches!(json.kind, ManifestErrorKind::Json(_)));

        let invalid = crate::Manifest::from_json("{}").unwrap_err();
        assert_eq!(
            assert_said_once(&invalid),
            "manifest: no \"name\" field",
            "{invalid:?}"
        );
        assert_eq!(invalid.reason(), "no \"name\" field");

        let name = validate_name("a/b").unwrap_err();
        assert_eq!(
            assert_said_once(&name),
            "invalid name \"a/b\": only ASCII letters, digits, '_', '-' and '.' are allowed"
        );
        let home = assert_said_once(&HomeError);
        assert!(home.contains("CJM_HOME"), "{home}");
    }
}
