//! What rides beside a call: the host's envelope in (the job id, on a `tracing` span
//! around the plugin's code) and the accounts recorded during the call out, on the
//! answer's `x-cjm-accounts` header.

use cjm_interface::envelope::ACCOUNTS_HEADER;
use cjm_interface::{wire, CallControl};
use hyper::header::{HeaderName, HeaderValue};
use hyper::Response;

use crate::body::ResponseBody;

/// The span a call's plugin code runs in: its records carry the job id (empty for a
/// call that came without one) and the call id, whatever subscriber the plugin set.
pub(crate) fn call_span(control: &CallControl) -> tracing::Span {
    tracing::info_span!(
        "call",
        job_id = control.job_id().unwrap_or(""),
        call_id = control.id()
    )
}

/// Put the accounts recorded during the call on its answer; no header when there
/// are none (an old host sees the answer it always saw).
pub(crate) fn attach_accounts(response: &mut Response<ResponseBody>, control: &CallControl) {
    let accounts = control.take_accounts();
    if accounts.is_empty() {
        return;
    }
    let header = wire::ascii_json(&accounts).and_then(|text| HeaderValue::from_str(&text).ok());
    match header {
        Some(header) => {
            response
                .headers_mut()
                .insert(HeaderName::from_static(ACCOUNTS_HEADER), header);
        }
        None => tracing::warn!(
            "call {}: {} account(s) could not be written as a header; dropped",
            control.id(),
            accounts.len()
        ),
    }
}
