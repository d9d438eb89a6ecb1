//! A response body of JSON lines read one value at a time (`POST /api/jobs/stream`).

use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

/// Why the next line could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonLinesError {
    /// The connection broke.
    #[error("the daemon's stream broke")]
    Http(#[source] hyper::Error),
    /// A line that is not JSON.
    #[error("the daemon sent a line that is not JSON: {0}")]
    Json(#[source] serde_json::Error),
}

/// A stream of JSON lines being read.
#[derive(Debug)]
pub struct JsonLines {
    body: Incoming,
    buffer: BytesMut,
}

impl JsonLines {
    pub(crate) fn new(body: Incoming) -> Self {
        JsonLines {
            body,
            buffer: BytesMut::new(),
        }
    }

    /// The next value; `None` when the daemon ended the stream. Dropping the future
    /// loses nothing: what was read stays in the buffer.
    pub async fn next(&mut self) -> Option<Result<Value, JsonLinesError>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|byte| *byte == b'\n') {
                let line = self.buffer.split_to(end + 1);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(serde_json::from_slice(&line).map_err(JsonLinesError::Json));
            }
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Err(err) => return Some(Err(JsonLinesError::Http(err))),
            }
        }
    }
}
