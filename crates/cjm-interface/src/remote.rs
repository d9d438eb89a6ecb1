//! Workers reached over the network (`--listen`): the certificate fingerprints both
//! ends pin, and the handshake line a worker prints once it listens.
//!
//! A remote worker serves TLS only. Trust is pinned both ways, in the spirit of
//! go-plugin's AutoMTLS: the host hands the worker the SHA-256 fingerprint of its
//! client certificate ([`wire::CLIENT_CERT_SHA256_ENV`](crate::wire::CLIENT_CERT_SHA256_ENV)),
//! the worker makes a fresh self-signed certificate at every start and reports its
//! fingerprint in the [`Handshake`]; each end then accepts exactly the other's
//! certificate. No fingerprint is a secret: only the private keys are, and they never
//! leave the process that made them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version of the handshake line this crate writes and reads (its `cjm_worker`
/// field).
pub const HANDSHAKE_VERSION: u32 = 1;

/// The SHA-256 digest of a certificate's DER encoding, the value both ends pin.
///
/// Written as 64 lowercase hex digits; read from hex in either case, with or without
/// the colons `openssl x509 -fingerprint -sha256` puts between bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint whose digest is `digest` (hashing is the caller's: this crate
    /// carries no cryptography).
    pub const fn from_digest(digest: [u8; 32]) -> Self {
        Fingerprint(digest)
    }

    /// The 32 bytes of the digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

// The hex form: a fingerprint in a log or an assertion must be comparable with the
// one printed by the other end.
impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Text that is not a SHA-256 fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not a SHA-256 fingerprint: {reason}")]
pub struct FingerprintError {
    /// The text as given.
    pub given: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |reason| FingerprintError {
            given: text.to_owned(),
            reason,
        };
        let digits: Vec<u8> = text.trim().bytes().filter(|&byte| byte != b':').collect();
        if digits.len() != 64 {
            return Err(error("it must have 64 hex digits (32 bytes)"));
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(digits.chunks_exact(2)) {
            let high = hex_value(pair[0]).ok_or_else(|| error("it has a non-hex character"))?;
            let low = hex_value(pair[1]).ok_or_else(|| error("it has a non-hex character"))?;
            *byte = high << 4 | low;
        }
        Ok(Fingerprint(digest))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The one JSON line a remote worker prints on stdout once it listens:
/// `{"cjm_worker": 1, "port": P, "server_cert_sha256": "<hex>", "pid": N}`.
///
/// The host reads it from the child's stdout, or from a Ray job's logs, to learn the
/// port and the certificate to pin. The worker's address is the host's to know (the
/// node it placed the worker on, or the one it was told to attach to): a worker
/// listening on `0.0.0.0` cannot tell which of its addresses the host can reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    /// [`HANDSHAKE_VERSION`].
    pub cjm_worker: u32,
    /// The TCP port the worker listens on.
    pub port: u16,
    /// The fingerprint of the worker's certificate.
    pub server_cert_sha256: Fingerprint,
    /// The worker's process id (on its own machine).
    pub pid: u32,
}

/// A line that looked like a handshake but cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Not a JSON object of the handshake's shape.
    #[error("handshake line {line:?} is not valid: {reason}")]
    Malformed {
        /// The line (cut to 200 characters).
        line: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A version of the handshake this host does not speak.
    #[error("worker speaks handshake version {given}, this host speaks {HANDSHAKE_VERSION}")]
    Version {
        /// The worker's `cjm_worker` field.
        given: u32,
    },
    /// Port 0 cannot be connected to.
    #[error("handshake names port 0")]
    NoPort,
}

impl Handshake {
    /// The handshake of a worker listening on `port` with a certificate of
    /// fingerprint `server_cert_sha256`, in process `pid`.
    pub fn new(port: u16, server_cert_sha256: Fingerprint, pid: u32) -> Self {
        Handshake {
            cjm_worker: HANDSHAKE_VERSION,
            port,
            server_cert_sha256,
            pid,
        }
    }

    /// The line the worker prints (without its newline).
    pub fn to_line(&self) -> String {
        // Serialising four plain fields cannot fail; the fallback keeps the type honest.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Whether `line` is meant as a handshake: a JSON object naming `cjm_worker`.
    /// Anything else (log lines, a plugin's own prints) is not the host's business.
    pub fn is_candidate(line: &str) -> bool {
        let line = line.trim();
        line.starts_with('{') && line.contains("\"cjm_worker\"")
    }

    /// Parse and check one handshake line.
    pub fn parse_line(line: &str) -> Result<Handshake, HandshakeError> {
        let trimmed = line.trim();
        let handshake: Handshake =
            serde_json::from_str(trimmed).map_err(|err| HandshakeError::Malformed {
                line: trimmed.chars().take(200).collect(),
                reason: err.to_string(),
            })?;
        if handshake.cjm_worker != HANDSHAKE_VERSION {
            return Err(HandshakeError::Version {
                given: handshake.cjm_worker,
            });
        }
        if handshake.port == 0 {
            return Err(HandshakeError::NoPort);
        }
        Ok(handshake)
    }

    /// The first handshake among `text`'s lines (a job's log, say), checked; `None`
    /// when no line is meant as one yet.
    pub fn find_in(text: &str) -> Option<Result<Handshake, HandshakeError>> {
        text.lines()
            .find(|line| Handshake::is_candidate(line))
            .map(Handshake::parse_line)
    }
}

/// Answer of `POST /lease` ([`wire::PATH_LEASE`](crate::wire::PATH_LEASE)): the lease
/// is renewed, and runs this many seconds from now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseResponse {
    /// `"renewed"`.
    pub status: String,
    /// Seconds the worker waits for the next word from its host; `None`: it has no
    /// lease and waits for ever.
    pub lease_secs: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn fingerprints_read_hex_in_either_case_with_or_without_colons() {
        let plain: Fingerprint = HEX.parse().unwrap();
        assert_eq!(plain.to_string(), HEX);
        let openssl = HEX
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(openssl.parse::<Fingerprint>().unwrap(), plain);
        assert_eq!(plain.as_bytes()[1], 0x11);
    }

    #[test]
    fn bad_fingerprints_say_what_is_wrong() {
        let short = "abcd".parse::<Fingerprint>().unwrap_err();
        assert_eq!(
            short.to_string(),
            "\"abcd\" is not a SHA-256 fingerprint: it must have 64 hex digits (32 bytes)"
        );
        let not_hex = HEX.replace('a', "g").parse::<Fingerprint>().unwrap_err();
        assert_eq!(not_hex.reason, "it has a non-hex character");
    }

    #[test]
    fn a_handshake_line_round_trips_and_is_checked() {
        let handshake = Handshake::new(4100, HEX.parse().unwrap(), 77);
        let line = handshake.to_line();
        assert_eq!(
            line,
            format!(r#"{{"cjm_worker":1,"port":4100,"server_cert_sha256":"{HEX}","pid":77}}"#)
        );
        assert_eq!(Handshake::parse_line(&line).unwrap(), handshake);

        let version = line.replace("\"cjm_worker\":1", "\"cjm_worker\":2");
        assert_eq!(
            Handshake::parse_line(&version).unwrap_err(),
            HandshakeError::Version { given: 2 }
        );
        let no_port = line.replace("4100", "0");
        assert_eq!(
            Handshake::parse_line(&no_port).unwrap_err(),
            HandshakeError::NoPort
        );
        let bad_print = line.replace(HEX, "zz");
        assert!(matches!(
            Handshake::parse_line(&bad_print).unwrap_err(),
            HandshakeError::Malformed { .. }
        ));
    }

    #[test]
    fn the_handshake_is_found_among_log_lines() {
        let line = Handshake::new(4100, HEX.parse().unwrap(), 77).to_line();
        let log = format!("starting\n{{\"other\": 1}}\n{line}\nserving\n");
        assert_eq!(Handshake::find_in(&log).unwrap().unwrap().port, 4100);
        assert!(Handshake::find_in("starting\nserving\n").is_none());
    }
}
