//! Attach: a worker someone else runs (a Kubernetes pod, a systemd unit) with
//! `--listen`, reached over TLS with both certificates pinned.

use std::time::Duration;

use cjm_interface::remote::Fingerprint;
use hyper::header::HeaderValue;

use super::remote::RemoteWorker;
use super::{PlaceFuture, Placed, Placement};
use crate::endpoint::Endpoint;
use crate::error::PlacementError;
use crate::transport::Transport;
use crate::worker::Worker;
use crate::{LaunchSpec, ProxyError};
use cjm_tls::{ClientIdentity, PinnedConnector};

/// How often an attached worker is sent `/lease`: often enough for a worker started
/// with `--lease-secs 30` or more, and it tells the host soon that the worker is gone.
pub const DEFAULT_ATTACH_RENEWAL: Duration = Duration::from_secs(5);

/// A worker at `host:port` that presents the certificate `server`, to which this
/// host presents `identity` (the worker must have been given its fingerprint).
/// Unloading lets the worker go; it is never stopped by the host.
#[derive(Debug, Clone)]
pub struct Attach {
    host: String,
    port: u16,
    server: Fingerprint,
    identity: ClientIdentity,
    authorization: Option<HeaderValue>,
    renewal: Duration,
}

impl Attach {
    /// The worker at `url` (`https://host:port`, or `host:port`), pinned to the
    /// server certificate `server`.
    pub fn new(
        url: &str,
        server: Fingerprint,
        identity: ClientIdentity,
    ) -> Result<Self, PlacementError> {
        let (host, port) = host_and_port(url)?;
        Ok(Attach {
            host,
            port,
            server,
            identity,
            authorization: None,
            renewal: DEFAULT_ATTACH_RENEWAL,
        })
    }

    /// Also send `Bearer <secret>` (for a worker its operator gave
    /// `CJM_WORKER_TOKEN`).
    pub fn bearer_secret(mut self, secret: &str) -> Result<Self, PlacementError> {
        let mut value = HeaderValue::from_str(&format!(
            "{} {secret}",
            cjm_interface::wire::AUTHORIZATION_SCHEME
        ))
        .map_err(|_| PlacementError::BadSecret)?;
        value.set_sensitive(true);
        self.authorization = Some(value);
        Ok(self)
    }

    /// Send `/lease` this often (default [`DEFAULT_ATTACH_RENEWAL`]).
    pub fn lease_renewal(mut self, every: Duration) -> Self {
        self.renewal = every;
        self
    }
}

impl Placement for Attach {
    fn describe(&self) -> String {
        format!("attach {}:{}", self.host, self.port)
    }

    fn place<'a>(&'a self, spec: &'a LaunchSpec) -> PlaceFuture<'a> {
        Box::pin(async move {
            let placement_error = |source| ProxyError::Placement {
                plugin: spec.plugin.clone(),
                placement: self.describe(),
                source: Box::new(source),
            };
            let connector = PinnedConnector::new(&self.identity, self.server)
                .map_err(|err| placement_error(PlacementError::Tls(err)))?
                .connect_timeout(spec.start_timeout);
            // Once, here, so that an unreachable worker or a wrong certificate is said
            // at once and as such, not as a worker that never became ready.
            connector
                .connect(&self.host, self.port)
                .await
                .map_err(|err| placement_error(PlacementError::Connect(err)))?;
            let endpoint = Endpoint::Tls {
                host: self.host.clone(),
                port: self.port,
            };
            let transport = Transport::tls(connector, &endpoint, self.authorization.clone());
            let worker = RemoteWorker::new(None);
            worker.renew_lease(transport.clone(), self.renewal);
            Ok(Placed {
                worker: Worker::Remote(worker),
                location: format!("attached at {endpoint}"),
                endpoint,
                transport,
                socket_folder: None,
                log_start: 0,
            })
        })
    }
}

/// `https://host:port`, `host:port` or `[v6]:port`.
pub(crate) fn host_and_port(url: &str) -> Result<(String, u16), PlacementError> {
    let bad = |reason: &str| PlacementError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("tls://"))
        .unwrap_or(url);
    if rest.contains("://") {
        return Err(bad("only https:// is served by a remote worker"));
    }
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("no port (host:port)"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_and_port_or_say_what_is_wrong() {
        assert_eq!(
            host_and_port("https://10.0.0.5:7443/").unwrap(),
            (String::from("10.0.0.5"), 7443)
        );
        assert_eq!(
            host_and_port("[::1]:9000").unwrap(),
            (String::from("[::1]"), 9000)
        );
        for (url, reason) in [
            ("http://h:1", "only https://"),
            ("https://h", "no port"),
            ("https://h:x", "not a number"),
            ("https://:5", "no host"),
        ] {
            let err = host_and_port(url).unwrap_err().to_string();
            assert!(err.contains(url) && err.contains(reason), "{err}");
        }
    }
}
