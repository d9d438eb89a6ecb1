//! The dashboard: one page and its assets, compiled into the binary (no build step,
//! nothing fetched from elsewhere). It reads the same API as any client, through
//! `fetch` and an `EventSource` on `/api/events`.
//!
//! Served under a Content-Security-Policy that allows only this origin: no inline
//! script or style, no other host, no framing. A plugin's message or result shown on
//! the page can therefore never run as code there, even if the page's own escaping
//! (it writes text, never markup) had a gap.

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS};
use hyper::{Response, StatusCode};

use crate::body::{self, Body};
use crate::problem::ApiError;

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const CHART_JS: &str = include_str!("dashboard/chart.js");
const DETAIL_JS: &str = include_str!("dashboard/detail.js");
const APP_CSS: &str = include_str!("dashboard/app.css");
const ICON: &str = include_str!("dashboard/icon.svg");

/// `default-src 'self'` covers scripts, styles, images and the event stream;
/// `frame-ancestors`, `base-uri` and `form-action` are not covered by it.
const POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `GET /`: the page.
pub(crate) fn page() -> Response<Body> {
    served(INDEX, "text/html; charset=utf-8")
}

/// `GET /assets/{name}`: the page's script, style and icon.
pub(crate) fn asset(name: &str) -> Result<Response<Body>, ApiError> {
    let (text, content_type) = match name {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "chart.js" => (CHART_JS, "text/javascript; charset=utf-8"),
        "detail.js" => (DETAIL_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "icon.svg" => (ICON, "image/svg+xml"),
        _ => {
            return Err(ApiError::not_found(
                "no_such_asset",
                format!(
                    "/assets/{name}: no such file (the dashboard has app.js, chart.js, detail.js, app.css, icon.svg)"
                ),
            ))
        }
    };
    Ok(served(text, content_type))
}

fn served(text: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = body::with_type(StatusCode::OK, text, content_type);
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The files change with the binary: a page from an older daemon must not stay.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_page_names_only_assets_that_are_served() {
        // Every `/assets/...` the page refers to answers; a typo would leave the page
        // without its script, and only a browser would notice.
        for reference in INDEX.split('"').filter(|part| part.starts_with("/assets/")) {
            let name = reference.trim_start_matches("/assets/");
            let response = asset(name).unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{reference}");
            assert_eq!(
                response.headers()[CONTENT_SECURITY_POLICY],
                POLICY,
                "{reference}"
            );
        }
        assert!(asset("../Cargo.toml").is_err());
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
    }
}
