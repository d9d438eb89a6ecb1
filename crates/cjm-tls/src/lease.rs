//! A remote worker's lease: it exits once its host has said nothing for the lease's
//! time, since no parent-death watch can follow a host on another machine. Every
//! request counts; `POST /lease` ([`wire::PATH_LEASE`]) exists so that a host with
//! nothing to ask can still say it is there.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cjm_interface::remote::LeaseResponse;
use cjm_interface::wire;
use tokio::time::Instant;

/// When the host was last heard from, and how long the worker waits for it. Tokio's
/// clock, so that tests can pause it.
#[derive(Debug)]
pub struct Lease {
    started: Instant,
    /// Milliseconds after `started`; only ever moves forward.
    last_heard_ms: AtomicU64,
    limit: Option<Duration>,
}

impl Lease {
    /// A lease of `limit` (`None`: one that never runs out), running from now: a host
    /// that never connects is gone too.
    pub fn new(limit: Option<Duration>) -> Self {
        Lease {
            started: Instant::now(),
            last_heard_ms: AtomicU64::new(0),
            limit,
        }
    }

    /// The lease's time, if it has one.
    pub fn limit(&self) -> Option<Duration> {
        self.limit
    }

    /// The host was heard from now.
    pub fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_heard_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn deadline(&self, limit: Duration) -> Instant {
        self.started + Duration::from_millis(self.last_heard_ms.load(Ordering::Relaxed)) + limit
    }

    /// Resolves once the lease has run out (never without a limit).
    pub async fn expired(&self) {
        let Some(limit) = self.limit else {
            return std::future::pending().await;
        };
        loop {
            let deadline = self.deadline(limit);
            if deadline <= Instant::now() {
                return;
            }
            // Woken at the deadline known now; a request meanwhile moves it on.
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Whether `request` is a renewal (`POST /lease`), to be answered with
    /// [`renewed`](Self::renewed) instead of being served.
    pub fn is_renewal<B>(request: &hyper::Request<B>) -> bool {
        request.method() == hyper::Method::POST && request.uri().path() == wire::PATH_LEASE
    }

    /// The answer to a renewal.
    pub fn renewed(&self) -> LeaseResponse {
        LeaseResponse {
            status: String::from("renewed"),
            lease_secs: self.limit.map(|limit| limit.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_runs_out_only_after_its_time_without_a_word() {
        let lease = Arc::new(Lease::new(Some(Duration::from_secs(3))));
        let started = tokio::time::Instant::now();
        let watcher = {
            let lease = Arc::clone(&lease);
            tokio::spawn(async move { lease.expired().await })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        lease.touch();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!watcher.is_finished(), "renewed at 2 s, so alive at 4 s");
        watcher.await.unwrap();
        // The paused clock moves only as far as needed: 2 s + 3 s.
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(5), "{waited:?}");
        assert!(waited < Duration::from_millis(5100), "{waited:?}");
    }

    #[test]
    fn a_renewal_is_a_post_to_the_lease_path_and_says_the_lease() {
        let renewal = hyper::Request::post(wire::PATH_LEASE).body(()).unwrap();
        assert!(Lease::is_renewal(&renewal));
        let health = hyper::Request::get(wire::PATH_LEASE).body(()).unwrap();
        assert!(!Lease::is_renewal(&health));
        let lease = Lease::new(Some(Duration::from_secs(30)));
        assert_eq!(lease.renewed().lease_secs, Some(30));
        assert_eq!(Lease::new(None).renewed().lease_secs, None);
    }
}
