//! Response bodies: a whole JSON document, or NDJSON chunks fed through a channel.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

pub(crate) type ResponseBody = Either<Full<Bytes>, ChannelBody>;

/// A body whose frames arrive through a channel from the thread producing them.
/// Dropping it (the client went away) closes the channel, which tells the producer to
/// stop.
#[derive(Debug)]
pub(crate) struct ChannelBody {
    receiver: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub(crate) fn new(receiver: mpsc::Receiver<Bytes>) -> Self {
        ChannelBody { receiver }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}
