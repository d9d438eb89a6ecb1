//! [`JobEvents`]: every state change and progress report, as a stream.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::Stream;
use tokio::sync::broadcast::{self, error::RecvError};

use super::model::{JobEvent, JobId};

/// Events were dropped because this listener fell too far behind (the channel keeps
/// the latest few thousand); the stream goes on with the next ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{missed} job events were missed: the listener fell behind")]
pub struct EventsLagged {
    /// How many.
    pub missed: u64,
}

type Next = Pin<
    Box<dyn Future<Output = (Result<JobEvent, RecvError>, broadcast::Receiver<JobEvent>)> + Send>,
>;

/// A stream of [`JobEvent`]s (all jobs', or one job's), from the moment it was made.
/// Ends when the [`Jobs`](super::Jobs) are gone.
pub struct JobEvents {
    next: Next,
    only: Option<JobId>,
}

impl std::fmt::Debug for JobEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobEvents")
            .field("only", &self.only)
            .finish()
    }
}

fn receive(mut receiver: broadcast::Receiver<JobEvent>) -> Next {
    Box::pin(async move { (receiver.recv().await, receiver) })
}

impl JobEvents {
    pub(crate) fn new(receiver: broadcast::Receiver<JobEvent>, only: Option<JobId>) -> Self {
        JobEvents {
            next: receive(receiver),
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
            let (received, receiver) = ready!(this.next.as_mut().poll(cx));
            this.next = receive(receiver);
            match received {
                Ok(event) if this.only.is_none_or(|job| job == event.job) => {
                    return Poll::Ready(Some(Ok(event)));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => {
                    return Poll::Ready(Some(Err(EventsLagged { missed })));
                }
                Err(RecvError::Closed) => return Poll::Ready(None),
            }
        }
    }
}
