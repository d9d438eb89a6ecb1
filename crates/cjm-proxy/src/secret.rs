//! The per-worker access secret: 256 random bits from the operating system, as hex.

use std::io;

const SECRET_BYTES: usize = 32;

/// A fresh secret, 64 lowercase hex digits.
pub(crate) fn generate() -> io::Result<String> {
    random_hex(SECRET_BYTES)
}

/// A short random name (16 hex digits), for folders that must not be guessed.
pub(crate) fn generate_short() -> io::Result<String> {
    random_hex(8)
}

fn random_hex(count: usize) -> io::Result<String> {
    let mut bytes = vec![0u8; count];
    getrandom::fill(&mut bytes).map_err(io::Error::from)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_hex_and_differ() {
        let first = generate().unwrap();
        let second = generate().unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first, second);
    }
}
