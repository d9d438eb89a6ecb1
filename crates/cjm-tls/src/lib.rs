//! Pinned TLS, both ends: how a host and a worker on another machine (`--listen`)
//! reach each other with no certificate authority in between.
//!
//! Trust is pinned both ways (see `cjm_interface::remote`): the host gives the worker
//! the fingerprint of its [`ClientIdentity`] (`CJM_CLIENT_CERT_SHA256`); the worker
//! makes a fresh certificate at every start ([`ServerTls`]), accepts only the host's
//! client certificate ([`PinnedClient`]) and prints its own fingerprint in its
//! handshake line ([`announce`], read by [`read_handshake`] or from a Ray job's log);
//! the host then connects with a [`PinnedConnector`], which accepts only that
//! certificate ([`PinnedServer`]). No names, dates or authorities are checked, because
//! none of them is what is trusted; signatures are, so each end proves it holds its
//! key. A worker that cannot follow its host's process (it is elsewhere) keeps a
//! [`Lease`] instead, and bounds the connections still in their TLS handshake
//! ([`PendingHandshakes`]), so that nobody without the host's key can crowd the host
//! out.
//!
//! Used by the host (`cjm-proxy`), the worker (`cjm-worker`, feature `remote`), the
//! relay in front of the original's Python worker (`cjm-relay`) and the Ray client's
//! pinned dashboards (`cjm-ray`).
#![warn(missing_docs)]

mod connect;
mod handshake;
mod identity;
mod lease;
mod pending;
mod server;
mod verify;

use cjm_interface::remote::Fingerprint;

pub use connect::{PinnedConnector, TlsConnectError, TlsStream, DEFAULT_CONNECT_TIMEOUT};
pub use handshake::{announce, read_handshake, HandshakeReadError};
pub use identity::{ClientIdentity, TlsError};
pub use lease::Lease;
pub use pending::{Heard, PendingHandshakes, MAX_PENDING_HANDSHAKES, TLS_HANDSHAKE_LIMIT};
pub use server::ServerTls;
pub use verify::{Mismatch, PinnedClient, PinnedServer};

/// SHA-256 of a certificate's DER bytes: what each end pins.
pub fn certificate_fingerprint(der: &[u8]) -> Fingerprint {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    Fingerprint::from_digest(bytes)
}

/// The crypto of both ends: ring (aws-lc needs cmake to build), TLS 1.3 only.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_sha256_of_the_der_bytes() {
        // SHA-256("abc"), from FIPS 180-2.
        assert_eq!(
            certificate_fingerprint(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
