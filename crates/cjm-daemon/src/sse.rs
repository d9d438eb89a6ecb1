//! Server-Sent Events read from a response body: frames split on blank lines,
//! `id:`, `event:` and `data:` fields, comments skipped.

use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:`, when it had one.
    pub id: Option<String>,
    /// `event:` (`message` when it named none).
    pub kind: String,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// An event stream being read.
#[derive(Debug)]
pub struct EventStream {
    body: Incoming,
    buffer: BytesMut,
}

impl EventStream {
    pub(crate) fn new(body: Incoming) -> Self {
        EventStream {
            body,
            buffer: BytesMut::new(),
        }
    }

    /// The next event; `None` when the daemon ended the stream. Dropping the future
    /// loses nothing: what was read stays in the buffer.
    pub async fn next(&mut self) -> Option<Result<SseEvent, hyper::Error>> {
        loop {
            while let Some(block) = take_block(&mut self.buffer) {
                if let Some(event) = parse_block(&block) {
                    return Some(Ok(event));
                }
            }
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Err(err) => return Some(Err(err)),
            }
        }
    }
}

/// The first whole block (up to a blank line) out of `buffer`, without it.
fn take_block(buffer: &mut BytesMut) -> Option<String> {
    let end = buffer.windows(2).position(|pair| pair == b"\n\n")?;
    let block = buffer.split_to(end + 2);
    Some(String::from_utf8_lossy(&block[..end]).into_owned())
}

/// An event from a block; `None` for a block of comments or `retry:` only.
fn parse_block(block: &str) -> Option<SseEvent> {
    let (mut id, mut kind, mut data) = (None, None, None::<String>);
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_owned()),
            "event" => kind = Some(value.to_owned()),
            "data" => match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    Some(SseEvent {
        id,
        kind: kind.unwrap_or_else(|| String::from("message")),
        data: data?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn blocks_split_on_blank_lines_and_comments_are_skipped() {
        let mut buffer = BytesMut::from(
            &b"retry: 1000\n\n: keep-alive\n\nid: s:1\nevent: job\ndata: {\"a\":1}\n\ndata: x\ndata: y\n\nid: s:2\nevent: jo"[..],
        );
        let mut events = Vec::new();
        while let Some(block) = take_block(&mut buffer) {
            events.extend(parse_block(&block));
        }
        assert_eq!(
            events,
            vec![
                SseEvent {
                    id: Some("s:1".into()),
                    kind: "job".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    id: None,
                    kind: "message".into(),
                    data: "x\ny".into()
                },
            ]
        );
        // The part of an event not yet whole stays for the next read.
        assert_eq!(&buffer[..], b"id: s:2\nevent: jo");
    }
}
