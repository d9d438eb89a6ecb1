//! Everything cjm-ctl prints on stdout goes through here, so that a reader that goes
//! away (`cjm-ctl exec .. | head -2`) ends the program quietly, as it ends any Unix
//! tool, instead of a panic in `println!`.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with `BrokenPipe`; it
//! becomes [`OutError::Closed`], which `main` turns into exit status 141 (a shell's
//! status for a command ended by SIGPIPE) with nothing said.

use std::fmt;
use std::io::{self, Write};

/// The exit status of a program whose stdout was closed: 128 + SIGPIPE, what a
/// shell reports for `yes | head -1`'s `yes`.
pub(crate) const CLOSED_EXIT: u8 = 141;

/// Why printing failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutError {
    /// The reader of stdout went away: nothing more can be printed, and nothing
    /// should be said about it.
    #[error("stdout was closed by its reader")]
    Closed,
    /// Another failure (a full disk behind a redirection): worth an error message.
    #[error("cannot write to stdout")]
    Failed(#[source] io::Error),
}

fn classify(err: io::Error) -> OutError {
    if err.kind() == io::ErrorKind::BrokenPipe {
        OutError::Closed
    } else {
        OutError::Failed(err)
    }
}

/// Write `bytes` to stdout and flush them: whoever reads sees them at once.
pub(crate) fn bytes(bytes: &[u8]) -> Result<(), OutError> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(classify)
}

/// Write one line (`text` and a newline) to stdout.
pub(crate) fn line(text: fmt::Arguments<'_>) -> Result<(), OutError> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_fmt(text)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush())
        .map_err(classify)
}

/// `println!` that returns an [`OutError`] instead of panicking.
macro_rules! outln {
    () => {
        $crate::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Whether `err` (or one of its causes) says that stdout was closed.
pub(crate) fn is_closed(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| matches!(cause.downcast_ref::<OutError>(), Some(OutError::Closed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_a_closed_stdout_and_other_errors_are_not() {
        let closed = classify(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(closed, OutError::Closed));
        assert!(is_closed(&anyhow::Error::new(closed).context("printing")));
        let full = classify(io::Error::from(io::ErrorKind::StorageFull));
        assert!(matches!(full, OutError::Failed(_)));
        let full = anyhow::Error::new(full);
        assert!(!is_closed(&full));
        assert!(format!("{full:#}").starts_with("cannot write to stdout"));
    }
}
