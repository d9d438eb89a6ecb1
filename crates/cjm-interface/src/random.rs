//! Names nobody can guess or repeat: a worker's access secret, a private folder's
//! name, a host run's session id. One source, the operating system's randomness.

use std::io;

/// `bytes` random bytes from the operating system, as lowercase hex (twice as many
/// digits). An error only where the system has no randomness to give.
///
/// ```
/// let secret = cjm_interface::random_hex(32).unwrap();
/// assert_eq!(secret.len(), 64);
/// assert!(secret.bytes().all(|digit| digit.is_ascii_hexdigit()));
/// ```
pub fn random_hex(bytes: usize) -> io::Result<String> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(io::Error::from)?;
    Ok(buffer.iter().map(|byte| format!("{byte:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_new() {
        let first = random_hex(8).unwrap();
        assert_eq!(first.len(), 16);
        assert_ne!(first, random_hex(8).unwrap());
    }
}
