//! What the host hands a worker through its environment: the listening socket
//! ([`wire::LISTEN_FD_ENV`]) and the access secret ([`wire::WORKER_TOKEN_ENV`]).
//!
//! Both are taken first thing in `main`, before logging, the plugin or any thread
//! exists: the variables are removed while nothing else can read the environment,
//! and the socket is owned and made close-on-exec before anything could start a
//! process that would inherit it (and keep it open after the worker is gone).

use std::fmt;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use cjm_interface::wire;
use rustix::io::FdFlags;

/// The host's hand-over, taken out of the environment.
#[derive(Default)]
pub struct HandOver {
    pub(crate) listener: Option<OwnedFd>,
    pub(crate) access_token: Option<String>,
}

// By hand, so that the secret never reaches a log.
impl fmt::Debug for HandOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandOver")
            .field("listener", &self.listener)
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A hand-over that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandOverError {
    /// The secret variable is set but empty or not UTF-8.
    #[error(
        "{} is set but is not a usable secret (empty or not UTF-8)",
        wire::WORKER_TOKEN_ENV
    )]
    BadSecret,
    /// Other threads already run, so the environment cannot be changed safely: the
    /// hand-over must be taken first thing in `main`.
    #[error(
        "the host's hand-over must be taken before any other thread starts \
         (call cjm_worker::main first thing in main)"
    )]
    NotAlone,
    /// The socket's descriptor (from the environment or `--fd`) is not an open one
    /// above the standard streams.
    #[error("{given_as}={value:?} {reason}")]
    BadListener {
        /// `CJM_LISTEN_FD` or `--fd`.
        given_as: &'static str,
        /// The descriptor as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl HandOver {
    /// Take the hand-over out of the environment: both variables are gone
    /// afterwards, whatever the outcome, so that nothing the plugin starts inherits
    /// the secret.
    ///
    /// # Safety
    ///
    /// No other thread may exist while this runs: it removes variables from the
    /// environment, which is undefined behaviour while another thread reads or
    /// changes it (`getenv` in C code included). Call it first thing in `main`, before
    /// logging, a runtime or anything else that may start a thread.
    /// [`main`](crate::main) does, and checks that it is alone.
    pub unsafe fn take() -> Result<HandOver, HandOverError> {
        let token = std::env::var_os(wire::WORKER_TOKEN_ENV);
        let listen_fd = std::env::var_os(wire::LISTEN_FD_ENV);
        // SAFETY: the caller promises that this is the only thread (see above).
        unsafe {
            std::env::remove_var(wire::WORKER_TOKEN_ENV);
            std::env::remove_var(wire::LISTEN_FD_ENV);
        }
        let access_token = match token.map(|token| token.into_string()) {
            None => None,
            Some(Ok(token)) if !token.trim().is_empty() => Some(token),
            Some(_) => return Err(HandOverError::BadSecret),
        };
        let listener = match listen_fd {
            None => None,
            Some(value) => Some(own_descriptor(
                wire::LISTEN_FD_ENV,
                &value.to_string_lossy(),
            )?),
        };
        Ok(HandOver {
            listener,
            access_token,
        })
    }

    /// Take descriptor `fd` as the listening socket (`--fd`), unless the environment
    /// already handed one over.
    pub fn with_inherited_fd(mut self, fd: i32) -> Result<Self, HandOverError> {
        if self.listener.is_none() {
            self.listener = Some(own_descriptor("--fd", &fd.to_string())?);
        }
        Ok(self)
    }

    /// A hand-over of a socket the caller owns (tests, embedding).
    pub fn with_listener(mut self, listener: OwnedFd) -> Self {
        self.listener = Some(listener);
        self
    }

    /// A hand-over requiring this secret (tests, embedding).
    pub fn with_access_token(mut self, token: impl Into<String>) -> Self {
        self.access_token = Some(token.into());
        self
    }
}

/// Whether this is the process's only thread: `/proc/self/task` lists one. `false`
/// when that cannot be read: then it cannot be shown.
pub(crate) fn is_only_thread() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|threads| threads.take(2).count() == 1)
}

fn own_descriptor(given_as: &'static str, value: &str) -> Result<OwnedFd, HandOverError> {
    let bad = |reason| HandOverError::BadListener {
        given_as,
        value: value.to_owned(),
        reason,
    };
    let fd: RawFd = value
        .trim()
        .parse()
        .map_err(|_| bad("is not a file descriptor"))?;
    if fd < 3 {
        return Err(bad("names a standard stream"));
    }
    // SAFETY: only borrowed for the F_GETFD check, which any integer survives; the
    // descriptor is owned below only once it is known to be open.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(borrowed).map_err(|_| bad("is not an open descriptor"))?;
    // Plugin subprocesses must not keep the listener open, or it would outlive us.
    rustix::io::fcntl_setfd(borrowed, FdFlags::CLOEXEC)
        .map_err(|_| bad("cannot be made close-on-exec"))?;
    // SAFETY: the host duplicated this descriptor onto this number in our process
    // alone, for us to own; nothing else in the process refers to it yet.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_must_be_open_and_not_a_standard_stream() {
        for (value, reason) in [
            ("x", "is not a file descriptor"),
            ("1", "names a standard stream"),
            ("987654", "is not an open descriptor"),
        ] {
            let err = own_descriptor(wire::LISTEN_FD_ENV, value).unwrap_err();
            assert_eq!(
                err,
                HandOverError::BadListener {
                    given_as: wire::LISTEN_FD_ENV,
                    value: value.to_owned(),
                    reason
                }
            );
            assert!(err.to_string().starts_with(wire::LISTEN_FD_ENV));
        }
    }

    #[test]
    fn a_test_thread_is_not_alone() {
        // The test harness runs tests on threads of their own: a hand-over taken here
        // would be undefined behaviour, and `main` would refuse it.
        assert!(!is_only_thread());
    }

    #[test]
    fn an_owned_descriptor_is_close_on_exec() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(file);
        let owned = own_descriptor("--fd", &raw.to_string()).unwrap();
        let flags = rustix::io::fcntl_getfd(&owned).unwrap();
        assert!(flags.contains(FdFlags::CLOEXEC));
    }
}
