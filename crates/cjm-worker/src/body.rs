//! Response bodies: a whole JSON document, or a stream of NDJSON lines.

use bytes::Bytes;
use http_body_util::{Either, Full};

pub(crate) type ResponseBody = Either<Full<Bytes>, crate::stream::NdjsonBody>;
