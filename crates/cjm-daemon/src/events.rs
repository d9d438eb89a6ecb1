//! The event stream: every job change and progress report, numbered and kept in a
//! bounded buffer, served as Server-Sent Events. A client that reconnects with
//! `Last-Event-ID` gets what it missed from the buffer; one that fell further behind
//! than the buffer reaches is sent a `lagged` event saying how many it missed, never
//! silently skipped.
//!
//! Ids are `SESSION:N`: the session (the job queue's, new at each start) tells a
//! client that reconnects to a restarted daemon that its id means nothing here.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

use crate::body::{Body, ChannelBody};

/// One numbered event.
#[derive(Debug)]
pub(crate) struct Numbered {
    pub(crate) id: u64,
    /// The SSE `event:` name.
    pub(crate) kind: &'static str,
    /// Compact JSON (no newline, so one `data:` line).
    pub(crate) data: String,
}

/// The numbered events: a bounded buffer, and the live feed.
#[derive(Debug)]
pub(crate) struct EventLog {
    session: String,
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<Numbered>>,
}

#[derive(Debug)]
struct Ring {
    /// The id of the last event (0: none yet).
    last: u64,
    events: VecDeque<Arc<Numbered>>,
    capacity: usize,
}

/// What a client gets from the buffer: what it missed that is still there, and how
/// many it missed that are not.
#[derive(Debug)]
pub(crate) struct Backlog {
    pub(crate) events: Vec<Arc<Numbered>>,
    pub(crate) lost: u64,
}

impl EventLog {
    pub(crate) fn new(session: &str, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (live, _) = broadcast::channel(capacity);
        EventLog {
            session: session.to_owned(),
            ring: Mutex::new(Ring {
                last: 0,
                events: VecDeque::with_capacity(capacity),
                capacity,
            }),
            live,
        }
    }

    /// Number and keep `data`, and send it to the live clients.
    pub(crate) fn push(&self, kind: &'static str, data: &Value) {
        let mut ring = self.ring.lock();
        ring.last += 1;
        let event = Arc::new(Numbered {
            id: ring.last,
            kind,
            data: data.to_string(),
        });
        if ring.events.len() == ring.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(Arc::clone(&event));
        // Under the lock: live clients get events in the order of their ids.
        let _ = self.live.send(event);
    }

    /// The events after `after` still kept, and how many after it are not.
    fn since_locked(ring: &Ring, after: u64) -> Backlog {
        let first = ring.events.front().map_or(ring.last + 1, |event| event.id);
        let lost = first.saturating_sub(after.saturating_add(1));
        Backlog {
            events: ring
                .events
                .iter()
                .filter(|event| event.id > after)
                .cloned()
                .collect(),
            lost,
        }
    }

    /// A client's start: subscribed to the live feed, with what it missed since
    /// `last_event_id` (none given: nothing before now), and the id it is at.
    pub(crate) fn subscribe(
        &self,
        last_event_id: Option<&str>,
    ) -> (
        broadcast::Receiver<Arc<Numbered>>,
        Backlog,
        u64,
        Option<String>,
    ) {
        let ring = self.ring.lock();
        let live = self.live.subscribe();
        let (after, note) = match last_event_id {
            None => (ring.last, None),
            Some(id) => match id.split_once(':') {
                Some((session, n)) if session == self.session => match n.parse::<u64>() {
                    Ok(n) if n <= ring.last => (n, None),
                    _ => (0, Some(format!("Last-Event-ID {id:?} was never sent here"))),
                },
                _ => (
                    0,
                    Some(format!(
                        "Last-Event-ID {id:?} is from another run of the daemon: what \
                         happened between the two is not here"
                    )),
                ),
            },
        };
        let backlog = Self::since_locked(&ring, after);
        let at = backlog.events.last().map_or(after, |event| event.id);
        (live, backlog, at, note)
    }

    /// The events after `after` (a client that fell behind the live feed).
    pub(crate) fn since(&self, after: u64) -> Backlog {
        Self::since_locked(&self.ring.lock(), after)
    }

    fn frame(&self, event: &Numbered) -> Bytes {
        Bytes::from(format!(
            "id: {}:{}\nevent: {}\ndata: {}\n\n",
            self.session, event.id, event.kind, event.data
        ))
    }
}

/// Until `closing` turns true (or its sender is gone). The guard `wait_for` returns
/// is dropped here, not held across the caller's awaits.
pub(crate) async fn until_closing(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

/// How often an idle stream gets a comment: proxies keep it open, and a client that
/// went away is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /api/events`: the stream, fed by a task of its own that ends when the
/// client goes or the daemon closes (`closing` turns true).
pub(crate) fn stream(
    log: Arc<EventLog>,
    last_event_id: Option<String>,
    mut closing: watch::Receiver<bool>,
) -> Response<Body> {
    // A few frames of slack; past them the client is behind and the live feed's
    // own bound (the buffer's size) decides when it has lost events.
    let (send, chunks) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let (mut live, backlog, mut at, note) = log.subscribe(last_event_id.as_deref());
        let lagged = |missed: u64, detail: String| {
            Bytes::from(format!(
                "event: lagged\ndata: {}\n\n",
                json!({"missed": missed, "detail": detail})
            ))
        };
        if send
            .send(Bytes::from_static(b"retry: 1000\n\n"))
            .await
            .is_err()
        {
            return;
        }
        if let Some(note) = note {
            let missed = backlog.lost;
            if send.send(lagged(missed, note)).await.is_err() {
                return;
            }
        } else if backlog.lost > 0 {
            let detail = String::from("events before the oldest one kept were dropped");
            if send.send(lagged(backlog.lost, detail)).await.is_err() {
                return;
            }
        }
        for event in &backlog.events {
            if send.send(log.frame(event)).await.is_err() {
                return;
            }
        }
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.tick().await;
        loop {
            let chunk = tokio::select! {
                _ = until_closing(&mut closing) => return,
                _ = keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
                received = live.recv() => match received {
                    Ok(event) if event.id <= at => continue,
                    Ok(event) => {
                        at = event.id;
                        log.frame(&event)
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Behind the live feed: what is still buffered is sent; what
                        // is not is said.
                        let backlog = log.since(at);
                        if backlog.lost > 0 {
                            let detail = String::from(
                                "this client fell behind: events it had not read were dropped",
                            );
                            if send.send(lagged(backlog.lost, detail)).await.is_err() {
                                return;
                            }
                        }
                        for event in &backlog.events {
                            if send.send(log.frame(event)).await.is_err() {
                                return;
                            }
                            at = event.id;
                        }
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if send.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(ChannelBody::new(chunks).boxed());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ids(backlog: &Backlog) -> Vec<u64> {
        backlog.events.iter().map(|event| event.id).collect()
    }

    #[test]
    fn a_reconnect_resumes_from_the_buffer_and_is_told_what_it_lost() {
        let log = EventLog::new("s", 3);
        for n in 0..5 {
            log.push("job", &json!({"n": n}));
        }
        // Kept: 3, 4, 5.
        let (_, backlog, at, note) = log.subscribe(Some("s:3"));
        assert_eq!(
            (ids(&backlog), backlog.lost, at, note),
            (vec![4, 5], 0, 5, None)
        );
        let (_, backlog, _, _) = log.subscribe(Some("s:1"));
        assert_eq!((ids(&backlog), backlog.lost), (vec![3, 4, 5], 1));
        // No id: from now on.
        let (_, backlog, at, _) = log.subscribe(None);
        assert_eq!((ids(&backlog), at), (vec![], 5));
        // Another run's id: everything kept, and a note.
        let (_, backlog, _, note) = log.subscribe(Some("other:2"));
        assert_eq!((ids(&backlog), backlog.lost), (vec![3, 4, 5], 2));
        assert!(note.unwrap().contains("another run"));
        let frame = log.frame(&backlog.events[0]);
        assert_eq!(&frame[..], b"id: s:3\nevent: job\ndata: {\"n\":2}\n\n");
    }
}
