//! The successor of the original (cjm-substrate) as a host of our workers: which of
//! its releases our workers answer, and how a host tells a worker which one.
//!
//! Its host refuses, at launch, a worker whose `/health` does not name a
//! `substrate_version` equal to its own. Our worker names one only when asked to
//! (the variable below, which an exported v2 manifest sets in `install.env_vars` and
//! the successor's host passes to the worker as it does every manifest variable), and
//! only a release whose worker protocol it speaks: it never echoes a version it has
//! not been checked against.

use std::fmt;

/// Names the cjm-substrate release a worker is to answer as (`/health`'s
/// `substrate_version`). Unset: the worker answers as the original 0.0.46's did,
/// without one.
pub const SUBSTRATE_VERSION_ENV: &str = "CJM_WORKER_SUBSTRATE_VERSION";

/// The cjm-substrate releases whose worker protocol our workers speak: each checked
/// route by route against its worker and its host's proxy (tests/fixtures/substrate).
pub const SPOKEN_SUBSTRATE_VERSIONS: &[&str] = &["0.0.74"];

/// A cjm-substrate release our workers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubstrateVersion(&'static str);

/// A cjm-substrate release our workers do not speak was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedSubstrate {
    /// What was asked, as given.
    pub asked: String,
    /// Where it was asked (a variable, an option).
    pub origin: &'static str,
}

impl fmt::Display for UnsupportedSubstrate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} asks for cjm-substrate {:?}, whose worker protocol this worker does not \
             speak (it speaks {})",
            self.origin,
            self.asked,
            SPOKEN_SUBSTRATE_VERSIONS.join(", ")
        )
    }
}

impl std::error::Error for UnsupportedSubstrate {}

impl SubstrateVersion {
    /// The release named `asked` (surrounding blanks ignored), if our workers speak
    /// it; `origin` says where the name came from, for the error.
    pub fn parse(asked: &str, origin: &'static str) -> Result<Self, UnsupportedSubstrate> {
        let wanted = asked.trim();
        SPOKEN_SUBSTRATE_VERSIONS
            .iter()
            .find(|spoken| **spoken == wanted)
            .map(|spoken| SubstrateVersion(spoken))
            .ok_or_else(|| UnsupportedSubstrate {
                asked: asked.to_owned(),
                origin,
            })
    }

    /// The release [`SUBSTRATE_VERSION_ENV`] asks for: `None` when it is unset or
    /// empty, an error when it names a release our workers do not speak (or is not
    /// UTF-8).
    pub fn from_env() -> Result<Option<Self>, UnsupportedSubstrate> {
        match std::env::var_os(SUBSTRATE_VERSION_ENV) {
            None => Ok(None),
            Some(value) if value.is_empty() => Ok(None),
            Some(value) => match value.to_str() {
                Some(text) => Self::parse(text, SUBSTRATE_VERSION_ENV).map(Some),
                None => Err(UnsupportedSubstrate {
                    asked: value.to_string_lossy().into_owned(),
                    origin: SUBSTRATE_VERSION_ENV,
                }),
            },
        }
    }

    /// The release, such as `0.0.74`.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for SubstrateVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spoken_release_is_taken_and_any_other_is_refused_naming_both() {
        let spoken = SubstrateVersion::parse(" 0.0.74\n", "--for-substrate").unwrap();
        assert_eq!(spoken.as_str(), "0.0.74");
        for asked in ["0.0.73", "0.0.740", "", "v0.0.74", "0.0.46"] {
            let err = SubstrateVersion::parse(asked, "--for-substrate").unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with("--for-substrate asks for"), "{message}");
            assert!(message.contains(&format!("{asked:?}")), "{message}");
            assert!(message.contains("speaks 0.0.74"), "{message}");
        }
    }
}
