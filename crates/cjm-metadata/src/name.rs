/// Why a plugin or environment name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {reason}")]
#[non_exhaustive]
pub struct NameError {
    /// The name as it was given.
    pub name: String,
    /// What is wrong with it, such as "it must not start with '.' or '-'".
    pub reason: &'static str,
}

const MAX_NAME_LEN: usize = 128;

/// Names become file names (`logs/<name>.log`, `plugins/<name>.json`,
/// `envs/<env_name>/`) and process arguments, so only a small safe set is accepted:
/// ASCII letters, digits, `_`, `-` and `.`, not starting with `.` or `-`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let refuse = |reason| {
        Err(NameError {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return refuse("it is longer than 128 characters");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return refuse("it must not start with '.' or '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return refuse("only ASCII letters, digits, '_', '-' and '.' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["cjm-echo", "whisper_local", "voxtral.v2", "A1"] {
            assert_eq!(validate_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_names_that_could_escape_a_path_or_a_command() {
        for name in [
            "",
            "x; rm -rf ~",
            "../etc",
            "a/b",
            ".hidden",
            "-rf",
            "a b",
            "ü",
            "$(id)",
        ] {
            assert!(validate_name(name).is_err(), "{name:?} was accepted");
        }
        assert!(validate_name(&"a".repeat(129)).is_err());
    }
}
