//! Plugin code runs on the blocking pool, never on the I/O thread.
//!
//! One thread serves every connection's I/O (see `server.rs`), as a bare hyper server
//! does: that is what lets 32 calls in flight cost little more than hyper itself.
//! Whatever may run the plugin's code, or wait for its lock (which a long
//! `/initialize` holds), is handed to tokio's blocking pool, which grows a thread for
//! each call that finds the others busy and keeps idle ones a while for the next:
//! so a long call holds up only its own request, never `/cancel`, `/progress` or
//! another call, and a burst of short calls reuses a few warm threads.

use hyper::{Response, StatusCode};

use crate::body::ResponseBody;
use crate::respond::error_response;

/// Run `work` on the blocking pool and answer what it answers.
pub(crate) async fn off_io<F>(work: F) -> Response<ResponseBody>
where
    F: FnOnce() -> Response<ResponseBody> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(response) => response,
        // Plugin panics are caught where the plugin is called (`host::guarded`): what
        // is left is the worker shutting down under the call.
        Err(err) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the worker is shutting down: {err}"),
            None,
        ),
    }
}
