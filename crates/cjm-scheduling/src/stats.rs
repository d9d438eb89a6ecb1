use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::BoxFuture;

/// The machine's state as a scheduler sees it. Key names are the original's telemetry
/// keys (`gpu_free_memory_mb`, `memory_available_mb`); a figure the source cannot
/// measure is absent, never zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_available_mb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_mb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_free_memory_mb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_total_memory_mb: Option<f64>,
    /// Whatever else the source reported, kept as it came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why fresh statistics could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsError {
    pub source_name: String,
    pub reason: String,
}

impl fmt::Display for StatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "system statistics from {} unavailable: {}",
            self.source_name, self.reason
        )
    }
}

impl std::error::Error for StatsError {}

/// Where fresh statistics come from: the local monitor, or a plugin registered as the
/// system monitor.
pub trait StatsSource: Send + Sync {
    fn system_stats(&self) -> BoxFuture<'_, Result<SystemStats, StatsError>>;
}
