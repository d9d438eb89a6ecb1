//! Who may use the API over TCP: a bearer token (`$CJM_HOME/daemon.token`), or the
//! session cookie a one-time login link sets; and, for requests that change state,
//! an `Origin` that is the daemon's own (a page elsewhere must not drive it through
//! a logged-in browser). The Unix socket needs none of it: its 0700 folder is the
//! guard. `GET /api/health` is open to all, for probes.
//!
//! Secrets are compared in constant time; sessions are kept as their SHA-256, so that
//! a lookup's timing says nothing of a session's value. None is ever logged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hyper::header::{HeaderValue, AUTHORIZATION, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use parking_lot::Mutex;

use cjm_manager::ErrorCategory;

use crate::body::{self, Body};
use crate::error::DaemonError;
use crate::problem::ApiError;
use crate::request::query;
use crate::token::Secret;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "cjm_session";
/// How long a login link may wait to be used.
const LOGIN_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// How long a browser's session lasts (a restart ends it sooner).
const SESSION_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Sessions kept at most: the oldest goes first, so that logins cannot grow memory.
const MAX_SESSIONS: usize = 1024;
/// Random bytes in a login link's token and in a session.
const SECRET_BYTES: usize = 32;

/// How a request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// The Unix socket: no token asked.
    Unix,
    /// Plain HTTP on loopback.
    Http,
    /// HTTPS.
    Https,
}

impl Via {
    fn scheme(self) -> &'static str {
        match self {
            Via::Https => "https",
            Via::Unix | Via::Http => "http",
        }
    }
}

/// A login link not yet used.
#[derive(Debug)]
struct OneTime {
    secret: Secret,
    expires: Instant,
}

/// The API's credentials: the token, this start's login link, the browsers' sessions.
#[derive(Debug)]
pub(crate) struct Auth {
    token: Secret,
    login: Mutex<Option<OneTime>>,
    /// SHA-256 of each session's value, and when it was made.
    sessions: Mutex<HashMap<[u8; 32], Instant>>,
}

/// What the gate decided.
pub(crate) enum Gate {
    /// On to the routes.
    Pass,
    /// Answered here: a login, or a refusal.
    Answer(Response<Body>),
}

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    Bearer,
    Cookie,
}

impl Auth {
    /// Credentials for a daemon whose token is `token`; with a one-time login
    /// secret (returned, for the login link) when it serves TCP.
    pub(crate) fn new(token: Secret, tcp: bool) -> Result<(Auth, Option<Secret>), DaemonError> {
        let one_time = match tcp {
            true => Some(Secret::random(SECRET_BYTES)?),
            false => None,
        };
        let login = one_time.clone().map(|secret| OneTime {
            secret,
            expires: Instant::now() + LOGIN_LIFETIME,
        });
        let auth = Auth {
            token,
            login: Mutex::new(login),
            sessions: Mutex::new(HashMap::new()),
        };
        Ok((auth, one_time))
    }

    /// Let `request` on to the routes, or answer it here.
    pub(crate) fn gate<B>(&self, via: Via, request: &Request<B>) -> Gate {
        if via == Via::Unix {
            return Gate::Pass;
        }
        let path = request.uri().path();
        let method = request.method();
        if path == "/login" {
            return Gate::Answer(match *method == Method::GET {
                true => self.login(via, request.uri().query()),
                false => not_get(method),
            });
        }
        if path == "/api/health" && *method == Method::GET {
            return Gate::Pass;
        }
        let credential = match self.credential(request.headers()) {
            Ok(credential) => credential,
            Err(detail) => return Gate::Answer(unauthorized(detail)),
        };
        if changes_state(method) {
            if let Err(err) = same_origin(via, request.headers(), credential) {
                return Gate::Answer(err.response());
            }
        }
        Gate::Pass
    }

    /// The bearer token if one is offered, else the session cookie.
    fn credential(&self, headers: &HeaderMap) -> Result<Credential, &'static str> {
        if let Some(value) = headers.get(AUTHORIZATION) {
            let offered = value
                .to_str()
                .ok()
                .and_then(|text| text.trim().split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim());
            return match offered {
                Some(token) if self.token.matches(token) => Ok(Credential::Bearer),
                Some(_) => Err("the bearer token is not this daemon's ($CJM_HOME/daemon.token)"),
                None => Err("Authorization takes `Bearer <token>` ($CJM_HOME/daemon.token)"),
            };
        }
        match session_cookie(headers) {
            Some(session) if self.session_is_valid(session) => Ok(Credential::Cookie),
            Some(_) => Err(
                "the session is unknown or expired (or the daemon restarted): \
                 log in again with the link it prints at start",
            ),
            None => Err(
                "this route needs `Authorization: Bearer <token>` (the token is in \
                 $CJM_HOME/daemon.token) or a session from the login link the daemon prints",
            ),
        }
    }

    fn session_is_valid(&self, session: &str) -> bool {
        let key = digest(session);
        let mut sessions = self.sessions.lock();
        match sessions.get(&key) {
            Some(made) if made.elapsed() < SESSION_LIFETIME => true,
            Some(_) => {
                sessions.remove(&key);
                false
            }
            None => false,
        }
    }

    /// `GET /login?token=...`: the first use of this start's link, in time, makes a
    /// session; any other is refused, and nothing is set.
    fn login(&self, via: Via, request_query: Option<&str>) -> Response<Body> {
        let offered = query(request_query, "token").unwrap_or("");
        let accepted = {
            let mut login = self.login.lock();
            let accepted = login
                .as_ref()
                .is_some_and(|one| one.expires > Instant::now() && one.secret.matches(offered));
            if accepted
                || login
                    .as_ref()
                    .is_some_and(|one| one.expires <= Instant::now())
            {
                // Used once, or past its time: gone either way.
                *login = None;
            }
            accepted
        };
        if !accepted {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "login_refused",
                ErrorCategory::UserInput,
                "this login link is wrong, used already, or expired (it lasts 10 minutes, \
                 once); the daemon prints a new one when it starts",
            )
            .response();
        }
        let session = match Secret::random(SECRET_BYTES) {
            Ok(session) => session,
            Err(err) => {
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "failed",
                    ErrorCategory::Fatal,
                    err.to_string(),
                )
                .response()
            }
        };
        self.remember(&session);
        let secure = match via {
            Via::Https => "; Secure",
            Via::Http | Via::Unix => "",
        };
        let cookie = format!(
            "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{secure}",
            session.expose()
        );
        let mut response = body::with_type(StatusCode::SEE_OTHER, "", "text/plain");
        let headers = response.headers_mut();
        headers.insert(LOCATION, HeaderValue::from_static("/"));
        match HeaderValue::from_str(&cookie) {
            Ok(value) => {
                headers.insert(SET_COOKIE, value);
            }
            Err(_) => {
                // Hex and fixed text: cannot happen; refused rather than half-done.
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "failed",
                    ErrorCategory::Fatal,
                    "the session cookie could not be written",
                )
                .response();
            }
        }
        tracing::info!("a browser logged in with the login link");
        response
    }

    fn remember(&self, session: &Secret) {
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, made| made.elapsed() < SESSION_LIFETIME);
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, made)| **made)
                .map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(digest(session.expose()), Instant::now());
    }
}

fn changes_state(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    )
}

/// A state-changing request's `Origin`, if any, must be the daemon's own; a browser
/// (which a cookie means) always sends one, so a cookie without it is refused too.
fn same_origin(via: Via, headers: &HeaderMap, credential: Credential) -> Result<(), ApiError> {
    let refused = |detail: String| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            ErrorCategory::UserInput,
            detail,
        )
    };
    let Some(origin) = headers.get(ORIGIN) else {
        return match credential {
            Credential::Bearer => Ok(()),
            Credential::Cookie => Err(refused(String::from(
                "a state-changing request with the session cookie must carry Origin \
                 (browsers send it; other clients use the bearer token)",
            ))),
        };
    };
    let origin = String::from_utf8_lossy(origin.as_bytes());
    let own = headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .map(|host| format!("{}://{host}", via.scheme()));
    match own {
        Some(own) if own.eq_ignore_ascii_case(origin.trim()) => Ok(()),
        Some(own) => Err(refused(format!(
            "Origin {origin:?} is not this daemon's ({own}): refused, so that no other \
             site's page can act through a logged-in browser"
        ))),
        None => Err(refused(format!(
            "Origin {origin:?} with no Host: the daemon's own origin is unknown"
        ))),
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
}

fn digest(text: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    bytes
}

fn unauthorized(detail: &str) -> Response<Body> {
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        ErrorCategory::UserInput,
        detail,
    )
    .response();
    response.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer"),
    );
    response
}

fn not_get(method: &Method) -> Response<Body> {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        ErrorCategory::UserInput,
        format!("{method} /login: this route takes GET"),
    )
    .response();
    response
        .headers_mut()
        .insert(hyper::header::ALLOW, HeaderValue::from_static("GET"));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(uri);
        for (key, value) in headers {
            builder = builder.header(*key, *value);
        }
        builder.body(()).unwrap()
    }

    fn status(gate: Gate) -> Option<u16> {
        match gate {
            Gate::Pass => None,
            Gate::Answer(response) => Some(response.status().as_u16()),
        }
    }

    #[test]
    fn tokens_cookies_and_origins() {
        let token = Secret::random(32).unwrap();
        let bearer = format!("Bearer {}", token.expose());
        let (auth, one_time) = Auth::new(token, true).unwrap();
        let one_time = one_time.unwrap();
        let host = ("host", "127.0.0.1:8000");
        assert_eq!(
            status(auth.gate(Via::Unix, &request("POST", "/api/jobs", &[]))),
            None
        );
        assert_eq!(
            status(auth.gate(Via::Http, &request("GET", "/api/health", &[]))),
            None
        );
        assert_eq!(
            status(auth.gate(Via::Http, &request("GET", "/api/jobs", &[]))),
            Some(401)
        );
        let wrong = ("authorization", "Bearer 00");
        assert_eq!(
            status(auth.gate(Via::Http, &request("GET", "/x", &[wrong]))),
            Some(401)
        );
        let good = ("authorization", bearer.as_str());
        assert_eq!(
            status(auth.gate(Via::Http, &request("GET", "/x", &[good]))),
            None
        );
        assert_eq!(
            status(auth.gate(Via::Http, &request("POST", "/x", &[good]))),
            None
        );
        let theirs = ("origin", "http://evil.example");
        let ours = ("origin", "http://127.0.0.1:8000");
        assert_eq!(
            status(auth.gate(Via::Http, &request("POST", "/x", &[good, host, theirs]))),
            Some(403)
        );
        assert_eq!(
            status(auth.gate(Via::Http, &request("POST", "/x", &[good, host, ours]))),
            None
        );
        // Over TLS the daemon's origin is https.
        assert_eq!(
            status(auth.gate(Via::Https, &request("POST", "/x", &[good, host, ours]))),
            Some(403)
        );

        // The login link: once.
        let login = format!("/login?token={}", one_time.expose());
        assert_eq!(
            status(auth.gate(Via::Http, &request("GET", "/login?token=00", &[]))),
            Some(403)
        );
        let Gate::Answer(response) = auth.gate(Via::Https, &request("GET", &login, &[])) else {
            panic!("no answer")
        };
        assert_eq!(response.status(), 303);
        let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        assert!(
            cookie.ends_with("; HttpOnly; SameSite=Strict; Path=/; Secure"),
            "{cookie}"
        );
        assert_eq!(
            status(auth.gate(Via::Http, &request("GET", &login, &[]))),
            Some(403)
        );
        let pair = cookie.split(';').next().unwrap().to_owned();
        let with_cookie = ("cookie", pair.as_str());
        assert_eq!(
            status(auth.gate(Via::Http, &request("GET", "/x", &[with_cookie]))),
            None
        );
        // A cookie's state change needs an Origin, and ours.
        assert_eq!(
            status(auth.gate(Via::Http, &request("POST", "/x", &[with_cookie, host]))),
            Some(403)
        );
        assert_eq!(
            status(auth.gate(
                Via::Http,
                &request("POST", "/x", &[with_cookie, host, ours])
            )),
            None
        );
        let forged = ("cookie", "cjm_session=00");
        assert_eq!(
            status(auth.gate(Via::Http, &request("GET", "/x", &[forged]))),
            Some(401)
        );
    }

    #[test]
    fn an_expired_link_is_refused() {
        let (auth, one_time) = Auth::new(Secret::random(32).unwrap(), true).unwrap();
        auth.login.lock().as_mut().unwrap().expires = Instant::now();
        let login = format!("/login?token={}", one_time.unwrap().expose());
        assert_eq!(
            status(auth.gate(Via::Http, &request("GET", &login, &[]))),
            Some(403)
        );
    }
}
