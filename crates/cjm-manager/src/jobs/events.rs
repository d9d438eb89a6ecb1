//! [`JobEvents`]: every state change and progress report, as a stream.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::Stream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

use super::model::{JobEvent, JobId};

/// Events were dropped because this listener fell too far behind (the channel keeps
/// the latest few thousand); the stream goes on with the next ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{missed} job events were missed: the listener fell behind")]
pub struct EventsLagged {
    /// How many.
    pub missed: u64,
}

/// A stream of [`JobEvent`]s (all jobs', or one job's), from the moment it was made.
/// Ends when the [`Jobs`](super::Jobs) are gone.
pub struct JobEvents {
    // tokio-stream's wrapper keeps one boxed receive future and reuses its
    // allocation for every event.
    events: BroadcastStream<JobEvent>,
    only: Option<JobId>,
}

impl std::fmt::Debug for JobEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobEvents")
            .field("only", &self.only)
            .finish()
    }
}

impl JobEvents {
    pub(crate) fn new(receiver: broadcast::Receiver<JobEvent>, only: Option<JobId>) -> Self {
        JobEvents {
            events: BroadcastStream::new(receiver),
            only,
        }
    }

    /// The next event; `None` once the jobs are gone.
    pub async fn next(&mut self) -> Option<Result<JobEvent, EventsLagged>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for JobEvents {
    type Item = Result<JobEvent, EventsLagged>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match ready!(Pin::new(&mut this.events).poll_next(cx)) {
                Some(Ok(event)) if this.only.is_none_or(|job| job == event.job) => {
                    return Poll::Ready(Some(Ok(event)));
                }
                Some(Ok(_)) => continue,
                Some(Err(BroadcastStreamRecvError::Lagged(missed))) => {
                    return Poll::Ready(Some(Err(EventsLagged { missed })));
                }
                None => return Poll::Ready(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::model::{JobChange, JobState};

    fn event(job: u64, fraction: f64) -> JobEvent {
        JobEvent {
            job: JobId(job),
            plugin: String::from("p"),
            change: JobChange::Progress {
                fraction,
                message: String::new(),
            },
        }
    }

    fn fraction(event: &JobEvent) -> f64 {
        match event.change {
            JobChange::Progress { fraction, .. } => fraction,
            _ => f64::NAN,
        }
    }

    #[tokio::test]
    async fn one_jobs_stream_skips_the_others_says_how_many_it_missed_and_ends_with_the_sender() {
        let (sender, receiver) = broadcast::channel(4);
        let mut events = JobEvents::new(receiver, Some(JobId(1)));
        // Six events into a channel of four: the listener misses the first two.
        for (job, step) in [(1, 0.1), (2, 0.2), (1, 0.3), (2, 0.4), (1, 0.5), (1, 0.6)] {
            sender.send(event(job, step)).unwrap();
        }
        assert_eq!(events.next().await, Some(Err(EventsLagged { missed: 2 })));
        // It goes on with the oldest kept, job 2's skipped.
        let next = events.next().await.unwrap().unwrap();
        assert_eq!((next.job, fraction(&next)), (JobId(1), 0.3));
        assert_eq!(fraction(&events.next().await.unwrap().unwrap()), 0.5);
        assert_eq!(fraction(&events.next().await.unwrap().unwrap()), 0.6);
        let ended = JobEvent {
            change: JobChange::State(JobState::Succeeded),
            ..event(1, 0.0)
        };
        sender.send(event(2, 0.7)).unwrap();
        sender.send(ended.clone()).unwrap();
        assert_eq!(events.next().await, Some(Ok(ended)));
        drop(sender);
        assert_eq!(events.next().await, None);
        // And stays ended.
        assert_eq!(events.next().await, None);
    }

    #[tokio::test]
    async fn every_jobs_stream_waits_for_the_next_event() {
        let (sender, receiver) = broadcast::channel(4);
        let mut events = JobEvents::new(receiver, None);
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(event) = events.next().await {
                seen.push(event.unwrap().job);
            }
            seen
        });
        for job in 1..=3 {
            // One at a time: each is sent only once the reader took the one before.
            while !sender.is_empty() {
                tokio::task::yield_now().await;
            }
            sender.send(event(job, 0.0)).unwrap();
        }
        while !sender.is_empty() {
            tokio::task::yield_now().await;
        }
        drop(sender);
        assert_eq!(reader.await.unwrap(), [JobId(1), JobId(2), JobId(3)]);
    }
}
