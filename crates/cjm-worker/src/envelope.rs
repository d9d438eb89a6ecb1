//! What rides beside a call: the host's envelope in (the job id, on the call's
//! `tracing` span, `log_lines::call_span`) and the accounts recorded during the call out, on the
//! answer's `x-cjm-accounts` header.

use cjm_interface::envelope::ACCOUNTS_HEADER;
use cjm_interface::{wire, CallControl};
use hyper::header::{HeaderName, HeaderValue};
use hyper::Response;

use crate::body::ResponseBody;

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
