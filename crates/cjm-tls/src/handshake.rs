//! The handshake line: one JSON line a remote worker prints on stdout once it
//! listens (its port, its certificate's fingerprint, its pid), and its reading on the
//! host's side.

use std::io;
use std::time::Duration;

use cjm_interface::remote::{Fingerprint, Handshake, HandshakeError};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The most a worker may print on stdout before its handshake line (a plugin's own
/// prints, say). Past it the worker is not taken for one of ours.
const MAX_OUTPUT_BEFORE_HANDSHAKE: usize = 64 * 1024;

/// Print the handshake line of this process, listening on `port` with the certificate
/// `fingerprint`, on stdout, where the host (or a Ray job's log) reads it. Only once
/// this line is out does the host connect, so the port must be accepting by then.
pub fn announce(port: u16, fingerprint: Fingerprint) -> io::Result<()> {
    use std::io::Write;
    let line = Handshake::new(port, fingerprint, std::process::id()).to_line();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

/// Why no handshake could be read from a worker's stdout.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeReadError {
    /// No handshake line in time.
    #[error("the worker printed no handshake within {waited:?}")]
    Timeout {
        /// How long was waited.
        waited: Duration,
    },
    /// Stdout closed first: the worker exited (or closed it) without a handshake.
    #[error("the worker's stdout closed before its handshake (did it exit?)")]
    Closed,
    /// Stdout could not be read.
    #[error("cannot read the worker's stdout")]
    Read(#[source] io::Error),
    /// A handshake line that cannot be used.
    #[error("the worker's handshake cannot be used")]
    Invalid(#[source] HandshakeError),
    /// More output than any worker prints before its handshake.
    #[error("the worker printed over {MAX_OUTPUT_BEFORE_HANDSHAKE} bytes without a handshake")]
    TooMuchOutput,
}

/// Read `stdout` up to the worker's handshake line and check it, giving up after
/// `limit`. Lines before it (a plugin's own prints) are skipped; the rest of the
/// output stays in `stdout` for the caller to drain (a worker whose stdout pipe is
/// full would block).
pub async fn read_handshake<R>(
    stdout: &mut R,
    limit: Duration,
) -> Result<Handshake, HandshakeReadError>
where
    R: AsyncBufRead + Unpin,
{
    let read = async {
        let mut seen = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            let read = stdout
                .read_line(&mut line)
                .await
                .map_err(HandshakeReadError::Read)?;
            if read == 0 {
                return Err(HandshakeReadError::Closed);
            }
            if Handshake::is_candidate(&line) {
                return Handshake::parse_line(&line).map_err(HandshakeReadError::Invalid);
            }
            tracing::debug!("worker output before its handshake: {}", line.trim_end());
            seen += read;
            if seen > MAX_OUTPUT_BEFORE_HANDSHAKE {
                return Err(HandshakeReadError::TooMuchOutput);
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .map_err(|_| HandshakeReadError::Timeout { waited: limit })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, BufReader};

    #[tokio::test]
    async fn the_handshake_is_read_past_other_output() {
        let (mut writer, reader) = tokio::io::duplex(1024);
        let line = Handshake::new(4100, crate::certificate_fingerprint(b"x"), 7).to_line();
        writer
            .write_all(format!("plugin says hi\n{line}\nmore\n").as_bytes())
            .await
            .unwrap();
        let mut reader = BufReader::new(reader);
        let handshake = read_handshake(&mut reader, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(handshake.port, 4100);
        // What follows stays for the caller.
        let mut rest = String::new();
        reader.read_line(&mut rest).await.unwrap();
        assert_eq!(rest, "more\n");
    }

    #[tokio::test]
    async fn no_handshake_is_an_error_that_says_why() {
        let (writer, reader) = tokio::io::duplex(1024);
        drop(writer);
        let closed = read_handshake(&mut BufReader::new(reader), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(closed, HandshakeReadError::Closed), "{closed:?}");

        let (_writer, reader) = tokio::io::duplex(1024);
        let silent = read_handshake(&mut BufReader::new(reader), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(
            silent.to_string(),
            "the worker printed no handshake within 50ms"
        );

        let (mut writer, reader) = tokio::io::duplex(1024);
        writer
            .write_all(b"{\"cjm_worker\": 1, \"port\": 0}\n")
            .await
            .unwrap();
        let invalid = read_handshake(&mut BufReader::new(reader), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(invalid, HandshakeReadError::Invalid(_)),
            "{invalid:?}"
        );
    }
}
