//! Reading a whole HTTP body (a request in the worker, a response in the host) into
//! one buffer.
//!
//! `collect()` would keep every frame alive until the end and then copy them all into
//! one buffer: the copy happens after the last byte arrived, on the critical path, and
//! the frames pin the connection's read buffers, so every read of a large body lands
//! in freshly faulted memory. Copying each frame as it arrives overlaps the copy with
//! the transfer and lets the connection reuse its read buffer.

use bytes::{Buf, Bytes};
use http_body::Body;
use http_body_util::BodyExt;

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError<E> {
    /// The body is longer than the reader's limit.
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The connection failed while the body was arriving. It displays as the
    /// transport's error, which is not also its `source`: said once.
    #[error("{0}")]
    Read(E),
}

/// The whole of `body`, at most `limit` bytes. The body's size hint (hyper's comes
/// from Content-Length) sizes the buffer once; it is never trusted beyond `limit`.
pub async fn read_to_bytes<B>(mut body: B, limit: usize) -> Result<Bytes, BodyError<B::Error>>
where
    B: Body + Unpin,
{
    let declared_len = declared_len(&body, limit)?;
    // A body that arrives in one frame (every small one) is passed on without a copy.
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(mut data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue; // trailers carry nothing for us
        };
        let held = first.as_ref().map_or(0, Bytes::len) + joined.len();
        if held + data.remaining() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        if held == 0 {
            first = Some(data.copy_to_bytes(data.remaining()));
            continue;
        }
        if let Some(first) = first.take() {
            joined.reserve_exact(declared_len.max(2 * (first.len() + data.remaining())));
            joined.extend_from_slice(&first);
        }
        append(&mut joined, &mut data, limit)?;
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

/// The whole of `body`, at most `limit` bytes, into `out` (emptied first). For a
/// caller that keeps one large buffer for many bodies: memory already faulted in is
/// reused instead of fresh memory being faulted in for every body.
pub async fn read_into<B>(
    mut body: B,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), BodyError<B::Error>>
where
    B: Body + Unpin,
{
    out.clear();
    out.reserve(declared_len(&body, limit)?);
    while let Some(frame) = body.frame().await {
        if let Ok(mut data) = frame.map_err(BodyError::Read)?.into_data() {
            append(out, &mut data, limit)?;
        }
    }
    Ok(())
}

/// The length the body announces (0 when it does not), refused above `limit`.
fn declared_len<B: Body>(body: &B, limit: usize) -> Result<usize, BodyError<B::Error>> {
    let hint = body.size_hint();
    if hint.lower() > limit as u64 {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(hint.exact().map_or(0, |len| len as usize))
}

fn append<D: Buf, E>(out: &mut Vec<u8>, data: &mut D, limit: usize) -> Result<(), BodyError<E>> {
    if out.len() + data.remaining() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    while data.has_remaining() {
        let chunk = data.chunk();
        let len = chunk.len();
        out.extend_from_slice(chunk);
        data.advance(len);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::SizeHint;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body that arrives in the given frames, announcing `declared` bytes.
    struct Frames {
        parts: VecDeque<Bytes>,
        declared: Option<u64>,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            Poll::Ready(
                self.parts
                    .pop_front()
                    .map(|data| Ok(http_body::Frame::data(data))),
            )
        }

        fn size_hint(&self) -> SizeHint {
            self.declared
                .map_or_else(SizeHint::new, SizeHint::with_exact)
        }
    }

    fn frames(parts: &[&'static str], declared: Option<u64>) -> Frames {
        let parts = parts.iter().map(|part| Bytes::from_static(part.as_bytes()));
        Frames {
            parts: parts.collect(),
            declared,
        }
    }

    #[tokio::test]
    async fn joins_frames_in_order() {
        let body = read_to_bytes(frames(&["{\"a\":", "", "[1,", "2]}"], Some(12)), 100);
        assert_eq!(body.await.unwrap(), &b"{\"a\":[1,2]}"[..]);
        let body = read_to_bytes(frames(&["ab", "cd", "e"], None), 100);
        assert_eq!(body.await.unwrap(), &b"abcde"[..]);
    }

    #[tokio::test]
    async fn passes_a_single_frame_on_without_copying() {
        let part = "one frame";
        let body = read_to_bytes(frames(&[part], Some(9)), 100).await.unwrap();
        assert_eq!(body.as_ptr(), part.as_ptr());
        assert!(read_to_bytes(frames(&[], None), 0)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn reads_into_a_kept_buffer_replacing_what_it_held() {
        let mut kept = Vec::with_capacity(64);
        kept.extend_from_slice(b"previous body");
        let held = kept.as_ptr();
        read_into(frames(&["ab", "cd"], Some(4)), &mut kept, 100)
            .await
            .unwrap();
        assert_eq!(kept, b"abcd");
        assert_eq!(kept.as_ptr(), held, "the kept memory is reused");
        let over = read_into(frames(&["abc", "de"], None), &mut kept, 4).await;
        assert!(matches!(over, Err(BodyError::TooLarge { limit: 4 })));
        let declared = read_into(frames(&[], Some(5)), &mut kept, 4).await;
        assert!(matches!(declared, Err(BodyError::TooLarge { limit: 4 })));
    }

    #[tokio::test]
    async fn refuses_bodies_over_the_limit_declared_or_not() {
        // Refused on the declaration alone: no frame is read.
        let declared = read_to_bytes(frames(&[], Some(5)), 4).await;
        assert!(matches!(declared, Err(BodyError::TooLarge { limit: 4 })));
        let undeclared = read_to_bytes(frames(&["ab", "cd", "e"], None), 4).await;
        assert!(matches!(undeclared, Err(BodyError::TooLarge { limit: 4 })));
        // A declaration that understates the body does not let more through.
        let understated = read_to_bytes(frames(&["ab", "cdef"], Some(2)), 4).await;
        assert!(matches!(understated, Err(BodyError::TooLarge { limit: 4 })));
        let exact = read_to_bytes(frames(&["ab", "cd"], None), 4).await;
        assert_eq!(exact.unwrap(), &b"abcd"[..]);
    }
}
