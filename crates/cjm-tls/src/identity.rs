//! The host's identity: a self-signed client certificate of its own, made fresh for
//! each host process or kept in a folder (mode 0600 in 0700) for workers that outlive
//! a host.

use std::io;
use std::sync::{Arc, OnceLock};

use cjm_interface::private::{write_private_file, IfExists};
use cjm_interface::remote::Fingerprint;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::certificate_fingerprint;

/// Why TLS could not be set up: an identity made, read or kept, or a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A self-signed certificate (the host's, or a worker's) could not be made.
    #[error("cannot make a self-signed certificate")]
    Certificate(#[source] rcgen::Error),
    /// rustls refused the configuration.
    #[error("cannot configure TLS")]
    Config(#[source] rustls::Error),
    /// A kept identity could not be read or written.
    #[error("cannot keep the host's TLS identity in {}", path.display())]
    Store {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The file, in the folder given to [`ClientIdentity::kept_in`], holding the host's
/// certificate and key together.
const IDENTITY_FILE: &str = "host-client.identity";
/// Its first bytes.
const IDENTITY_HEADER: &[u8] = b"cjm host identity 1\n";
/// The certificate, as earlier releases kept it.
const LEGACY_CERT_FILE: &str = "host-client.der";
/// Its key, as earlier releases kept it.
const LEGACY_KEY_FILE: &str = "host-client.key";

/// A `TlsError::Store` about `path`.
fn store(path: &std::path::Path) -> impl Fn(io::Error) -> TlsError {
    let path = path.to_path_buf();
    move |source| TlsError::Store {
        path: path.clone(),
        source,
    }
}

/// The host's client certificate and its key: made fresh for each host process
/// ([`shared`](Self::shared)), or kept in a folder ([`kept_in`](Self::kept_in)) for
/// workers that outlive a host (attached ones are given its fingerprint once).
#[derive(Clone)]
pub struct ClientIdentity {
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) key: Arc<PrivatePkcs8KeyDer<'static>>,
    fingerprint: Fingerprint,
}

// By hand, so that the key never reaches a log.
impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// A new self-signed certificate (ECDSA P-256) and key.
    pub fn generate() -> Result<Self, TlsError> {
        let certified = rcgen::generate_simple_self_signed(vec![String::from("cjm-host")])
            .map_err(TlsError::Certificate)?;
        let cert = certified.cert.der().clone();
        Ok(ClientIdentity {
            fingerprint: certificate_fingerprint(&cert),
            cert,
            key: Arc::new(PrivatePkcs8KeyDer::from(
                certified.signing_key.serialize_der(),
            )),
        })
    }

    /// The identity of this host process, made on first use: every remote worker
    /// this process starts or attaches to is given the same fingerprint.
    pub fn shared() -> Result<ClientIdentity, TlsError> {
        static SHARED: OnceLock<ClientIdentity> = OnceLock::new();
        if let Some(identity) = SHARED.get() {
            return Ok(identity.clone());
        }
        let made = ClientIdentity::generate()?;
        // Two first callers at once: one identity wins, both use it.
        Ok(SHARED.get_or_init(|| made).clone())
    }

    /// The identity kept in `folder` (`host-client.identity`: certificate and key in
    /// one file, mode 0600, in a folder made 0700), made and kept there on first use.
    /// A host that attaches to workers needs the same identity at every start: those
    /// workers were given its fingerprint by their operators.
    ///
    /// Made by several processes at once, one identity wins and all of them use it:
    /// each writes its own whole, and the first in place is kept
    /// (`cjm_interface::private::write_private_file`), the others read it. So a key
    /// never sits beside another's certificate. Blocking file work: from
    /// async code, call [`kept_in_async`](Self::kept_in_async).
    ///
    /// A folder from earlier releases (`host-client.der` and `host-client.key`) is
    /// read as it is, once its key is checked to match its certificate.
    pub fn kept_in(folder: &std::path::Path) -> Result<ClientIdentity, TlsError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = folder.join(IDENTITY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => return ClientIdentity::decode(&path, &bytes),
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(store(&path)(err)),
            Err(_) => {}
        }
        if let Some(identity) = ClientIdentity::legacy_kept_in(folder)? {
            return Ok(identity);
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .map_err(store(folder))?;
        let made = ClientIdentity::generate()?;
        let written =
            write_private_file(&path, &made.encode(), IfExists::Keep).map_err(store(&path))?;
        if written {
            return Ok(made);
        }
        // Another process (or thread) was first: its identity is the one kept.
        let bytes = std::fs::read(&path).map_err(store(&path))?;
        ClientIdentity::decode(&path, &bytes)
    }

    /// [`kept_in`](Self::kept_in) on tokio's blocking pool, off the runtime's threads.
    pub async fn kept_in_async(folder: std::path::PathBuf) -> Result<ClientIdentity, TlsError> {
        let path = folder.clone();
        tokio::task::spawn_blocking(move || ClientIdentity::kept_in(&folder))
            .await
            .map_err(|err| TlsError::Store {
                path,
                source: io::Error::other(format!("the task reading it ended: {err}")),
            })?
    }

    /// The pair earlier releases kept, if both files are there.
    fn legacy_kept_in(folder: &std::path::Path) -> Result<Option<ClientIdentity>, TlsError> {
        let cert_path = folder.join(LEGACY_CERT_FILE);
        let key_path = folder.join(LEGACY_KEY_FILE);
        match (std::fs::read(&cert_path), std::fs::read(&key_path)) {
            (Ok(cert), Ok(key)) => ClientIdentity::checked(&key_path, cert, key).map(Some),
            (Err(err), _) if err.kind() != io::ErrorKind::NotFound => Err(store(&cert_path)(err)),
            (_, Err(err)) if err.kind() != io::ErrorKind::NotFound => Err(store(&key_path)(err)),
            _ => Ok(None),
        }
    }

    /// The identity file's bytes: a header line, the certificate's length (4 bytes,
    /// big-endian), the certificate, the key (PKCS#8), all DER.
    fn encode(&self) -> Vec<u8> {
        let cert = self.cert.as_ref();
        let key = self.key.secret_pkcs8_der();
        let mut bytes = Vec::with_capacity(IDENTITY_HEADER.len() + 4 + cert.len() + key.len());
        bytes.extend_from_slice(IDENTITY_HEADER);
        // A certificate of ours is a few hundred bytes.
        bytes.extend_from_slice(&u32::try_from(cert.len()).unwrap_or(u32::MAX).to_be_bytes());
        bytes.extend_from_slice(cert);
        bytes.extend_from_slice(key);
        bytes
    }

    fn decode(path: &std::path::Path, bytes: &[u8]) -> Result<ClientIdentity, TlsError> {
        let invalid = || {
            store(path)(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a host identity written by cjm (remove it to make a new one; \
                 workers must then be given the new fingerprint)",
            ))
        };
        let rest = bytes.strip_prefix(IDENTITY_HEADER).ok_or_else(invalid)?;
        let (length, rest) = rest.split_first_chunk::<4>().ok_or_else(invalid)?;
        let length = usize::try_from(u32::from_be_bytes(*length)).map_err(|_| invalid())?;
        if length == 0 || length >= rest.len() {
            return Err(invalid());
        }
        let (cert, key) = rest.split_at(length);
        ClientIdentity::checked(path, cert.to_vec(), key.to_vec())
    }

    /// An identity from a certificate and a key read from `path`, once the key is
    /// known to be the certificate's.
    fn checked(
        path: &std::path::Path,
        cert: Vec<u8>,
        key: Vec<u8>,
    ) -> Result<ClientIdentity, TlsError> {
        let cert = CertificateDer::from(cert);
        let key = PrivatePkcs8KeyDer::from(key);
        rustls::sign::CertifiedKey::from_der(
            vec![cert.clone()],
            PrivateKeyDer::Pkcs8(key.clone_key()),
            &crate::provider(),
        )
        .map_err(|err| {
            store(path)(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the kept key is not the kept certificate's ({err}); remove the \
                     folder to make a new identity (workers must then be given the new \
                     fingerprint)"
                ),
            ))
        })?;
        Ok(ClientIdentity {
            fingerprint: certificate_fingerprint(&cert),
            cert,
            key: Arc::new(key),
        })
    }

    /// What a worker must be given in `CJM_CLIENT_CERT_SHA256`.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_identity_is_the_same_at_every_start_and_only_its_owner_reads_the_key() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let folder = home.path().join("tls");
        let first = ClientIdentity::kept_in(&folder).unwrap();
        let again = ClientIdentity::kept_in(&folder).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert_ne!(
            first.fingerprint(),
            ClientIdentity::generate().unwrap().fingerprint()
        );
        let mode = |name: &str| {
            std::fs::metadata(folder.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("host-client.identity"), 0o600);
        // The identity file alone: no temporary is left behind.
        assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 1);
        assert_eq!(
            std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // A kept identity still makes a working TLS configuration.
        crate::PinnedConnector::new(&again, first.fingerprint()).unwrap();
    }

    /// The key of `identity` is its certificate's.
    fn assert_whole(identity: &ClientIdentity) {
        rustls::sign::CertifiedKey::from_der(
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(identity.key.clone_key()),
            &rustls::crypto::ring::default_provider(),
        )
        .unwrap();
    }

    /// Run by [`an_identity_made_by_many_at_once_is_one_and_whole`] in processes of
    /// its own (this test binary again): prints the fingerprint it got.
    #[test]
    fn identity_maker_in_a_child_process() {
        let Some(folder) = std::env::var_os("CJM_TEST_IDENTITY_FOLDER") else {
            return;
        };
        let identity = ClientIdentity::kept_in(std::path::Path::new(&folder)).unwrap();
        assert_whole(&identity);
        std::fs::write(
            std::path::Path::new(&folder).with_extension(format!("seen{}", std::process::id())),
            identity.fingerprint().to_string(),
        )
        .unwrap();
    }

    #[test]
    fn an_identity_made_by_many_at_once_is_one_and_whole() {
        // Several rounds: the race is between processes and threads alike.
        for _ in 0..5 {
            one_identity_made_by_many_at_once();
        }
    }

    fn one_identity_made_by_many_at_once() {
        const THREADS: usize = 8;
        const PROCESSES: usize = 4;
        let home = tempfile::tempdir().unwrap();
        let folder = home.path().join("tls");
        let test_binary = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..PROCESSES)
            .map(|_| {
                std::process::Command::new(&test_binary)
                    .args([
                        "--exact",
                        "identity::tests::identity_maker_in_a_child_process",
                    ])
                    .env("CJM_TEST_IDENTITY_FOLDER", &folder)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let start = Arc::new(std::sync::Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (folder, start) = (folder.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    ClientIdentity::kept_in(&folder).unwrap()
                })
            })
            .collect();
        let mut seen: Vec<String> = threads
            .into_iter()
            .map(|thread| {
                let identity = thread.join().unwrap();
                assert_whole(&identity);
                identity.fingerprint().to_string()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        for entry in std::fs::read_dir(home.path()).unwrap() {
            let path = entry.unwrap().path();
            if path
                .extension()
                .is_some_and(|ext| ext.to_string_lossy().starts_with("seen"))
            {
                seen.push(std::fs::read_to_string(path).unwrap());
            }
        }
        assert_eq!(seen.len(), THREADS + PROCESSES);
        let kept = ClientIdentity::kept_in(&folder).unwrap();
        assert_whole(&kept);
        let kept = kept.fingerprint().to_string();
        assert!(
            seen.iter().all(|one| *one == kept),
            "{kept} kept; seen {seen:?}"
        );
    }

    #[test]
    fn an_identity_kept_by_an_earlier_release_is_read_if_whole() {
        let home = tempfile::tempdir().unwrap();
        let folder = home.path().join("tls");
        std::fs::create_dir(&folder).unwrap();
        let old = ClientIdentity::generate().unwrap();
        std::fs::write(folder.join(LEGACY_CERT_FILE), old.cert.as_ref()).unwrap();
        std::fs::write(folder.join(LEGACY_KEY_FILE), old.key.secret_pkcs8_der()).unwrap();
        let read = ClientIdentity::kept_in(&folder).unwrap();
        assert_eq!(read.fingerprint(), old.fingerprint());
        assert!(!folder.join(IDENTITY_FILE).exists());

        // A key beside another's certificate (what two first writers at once could
        // leave) is refused, saying what to do.
        let stranger = ClientIdentity::generate().unwrap();
        std::fs::write(
            folder.join(LEGACY_KEY_FILE),
            stranger.key.secret_pkcs8_der(),
        )
        .unwrap();
        let err = ClientIdentity::kept_in(&folder).unwrap_err();
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            cause
                .as_deref()
                .is_some_and(|cause| cause.contains("remove the folder")),
            "{err}: {cause:?}"
        );
    }

    #[test]
    fn one_identity_per_host_process() {
        let first = ClientIdentity::shared().unwrap();
        let second = ClientIdentity::shared().unwrap();
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert_ne!(
            ClientIdentity::generate().unwrap().fingerprint(),
            first.fingerprint()
        );
    }
}
