//! Who may talk to the worker: when the host gave it a secret, only requests that
//! carry it. Any local user can connect to a loopback port; only the host knows the
//! secret (it travels in the environment, which `ps` does not show to others).

use cjm_interface::wire;
use hyper::header::HeaderValue;
use subtle::ConstantTimeEq;

/// The `Authorization` value a request must carry.
pub(crate) struct AccessToken {
    expected: Vec<u8>,
}

impl AccessToken {
    pub(crate) fn new(secret: &str) -> Self {
        AccessToken {
            expected: format!("{} {secret}", wire::AUTHORIZATION_SCHEME).into_bytes(),
        }
    }

    /// Whether `header` is the expected value, compared in constant time so that the
    /// answer's timing tells nothing about how much of a guess was right. (The length
    /// is no secret: every token has the same one.)
    pub(crate) fn admits(&self, header: Option<&HeaderValue>) -> bool {
        let given = header.map_or(&[][..], HeaderValue::as_bytes);
        bool::from(given.ct_eq(&self.expected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_value_is_admitted() {
        let token = AccessToken::new("00ff");
        assert!(token.admits(Some(&HeaderValue::from_static("Bearer 00ff"))));
        for wrong in ["Bearer 00fe", "Bearer 00ff ", "bearer 00ff", "00ff", ""] {
            assert!(
                !token.admits(Some(&HeaderValue::from_static(wrong))),
                "{wrong:?}"
            );
        }
        assert!(!token.admits(None));
    }
}
