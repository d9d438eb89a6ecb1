//! A plugin's observability class (the successor cjm-substrate's `full` and
//! `ambient`): how much of its jobs the journal keeps.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

/// How much of a plugin's jobs the journal keeps. In-memory status and events are
/// the same for both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Observability {
    /// Every job is journaled (the default).
    #[default]
    Full,
    /// Only jobs that failed, were cancelled or were retried are journaled: for a
    /// plugin called many times a second whose successes are not worth a row each.
    Ambient,
}

impl Observability {
    /// The manifest's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Observability::Full => "full",
            Observability::Ambient => "ambient",
        }
    }
}

impl fmt::Display for Observability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not an observability class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("observability class must be \"full\" or \"ambient\", got {given:?}")]
pub struct UnknownObservability {
    /// What was given.
    pub given: String,
}

impl FromStr for Observability {
    type Err = UnknownObservability;

    fn from_str(word: &str) -> Result<Self, Self::Err> {
        match word {
            "full" => Ok(Observability::Full),
            "ambient" => Ok(Observability::Ambient),
            other => Err(UnknownObservability {
                given: other.to_owned(),
            }),
        }
    }
}

/// The manifest's `observability` field: `"full"`, `"ambient"`, or absent.
pub(crate) fn observability_of(
    extra: &Map<String, Value>,
) -> Result<Option<Observability>, String> {
    match extra.get("observability") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(word)) => word.parse().map(Some).map_err(|err| format!("{err}")),
        Some(other) => Err(format!(
            "\"observability\" must be \"full\" or \"ambient\", got {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn the_field_is_read_and_a_bad_word_named() {
        assert_eq!(observability_of(&fields(json!({}))), Ok(None));
        assert_eq!(
            observability_of(&fields(json!({"observability": "ambient"}))),
            Ok(Some(Observability::Ambient))
        );
        let err = observability_of(&fields(json!({"observability": "quiet"}))).unwrap_err();
        assert!(err.contains("\"quiet\""), "{err}");
        let err = observability_of(&fields(json!({"observability": 3}))).unwrap_err();
        assert!(err.contains("got 3"), "{err}");
    }
}
