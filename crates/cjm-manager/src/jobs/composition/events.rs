//! [`CompositionEvents`]: one composition's events, as a stream.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::Stream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

use super::status::{CompositionEvent, CompositionId};
use crate::jobs::EventsLagged;

/// A stream of [`CompositionEvent`]s of one composition (or all), from the moment it
/// was made. Ends when the [`Jobs`](crate::jobs::Jobs) are gone.
pub struct CompositionEvents {
    events: BroadcastStream<CompositionEvent>,
    only: Option<CompositionId>,
}

impl std::fmt::Debug for CompositionEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompositionEvents")
            .field("only", &self.only)
            .finish()
    }
}

impl CompositionEvents {
    pub(crate) fn new(
        receiver: broadcast::Receiver<CompositionEvent>,
        only: Option<CompositionId>,
    ) -> Self {
        CompositionEvents {
            events: BroadcastStream::new(receiver),
            only,
        }
    }

    /// The next event; `None` once the jobs are gone.
    pub async fn next(&mut self) -> Option<Result<CompositionEvent, EventsLagged>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for CompositionEvents {
    type Item = Result<CompositionEvent, EventsLagged>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match ready!(Pin::new(&mut this.events).poll_next(cx)) {
                Some(Ok(event)) if this.only.is_none_or(|id| id == event.composition) => {
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
