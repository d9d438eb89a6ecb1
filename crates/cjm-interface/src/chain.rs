//! An error with all its causes in one line, as anyhow's `{:#}` prints it: for the
//! places that must turn an error into text (a job's failure, a worker's exit
//! message, a transport error whose top level says little).

use std::error::Error;
use std::fmt;

/// Displays `error: cause: cause ..`, each clause once, in order.
///
/// ```
/// use cjm_interface::ErrorChain;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot read plugins.yaml")]
/// struct ReadFailed(#[source] std::io::Error);
///
/// let err = ReadFailed(std::io::Error::other("permission denied"));
/// assert_eq!(
///     ErrorChain(&err).to_string(),
///     "cannot read plugins.yaml: permission denied"
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl ErrorChain<'_> {
    /// The first clause said twice along the chain, if any: the sign of an error that
    /// both names its cause in its own message and returns it as its source, which
    /// then reads `cannot open x: no such file: no such file`.
    pub fn repeated_clause(&self) -> Option<String> {
        let text = self.to_string();
        let clauses: Vec<&str> = text.split(": ").collect();
        clauses
            .iter()
            .enumerate()
            .find(|(at, clause)| clauses[at + 1..].contains(clause))
            .map(|(_, clause)| (*clause).to_owned())
    }
}
