//! The benchmark's plugin for long-running work: `execute(ticks, interval_ms, deaf)`
//! reports progress every `interval_ms` (its message is the wall-clock time of the
//! report, in nanoseconds since the Unix epoch, so the host can tell how long the
//! report took to reach it) and stops at the next tick once cancelled, unless `deaf`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cjm_interface::{Call, ConfigMap, Plugin, PluginError};
use serde_json::{json, Value};

#[derive(Debug, Default)]
struct Ticker;

impl Plugin for Ticker {
    fn name(&self) -> &str {
        "ticker"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn initialize(&mut self, _config: ConfigMap) -> Result<(), PluginError> {
        Ok(())
    }

    fn execute(&self, call: Call) -> Result<Value, PluginError> {
        let ticks: u64 = call.or(0, "ticks", 10)?;
        let interval = Duration::from_millis(call.or(1, "interval_ms", 10)?);
        let deaf: bool = call.or(2, "deaf", false)?;
        let control = call.control();
        for tick in 0..ticks {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos());
            control.report_progress((tick + 1) as f64 / ticks as f64, now.to_string());
            if deaf {
                std::thread::sleep(interval);
            } else if control.wait_cancelled(interval) {
                return Err(PluginError::cancelled("stopped at a tick"));
            }
        }
        Ok(json!({"ticks": ticks}))
    }
}

fn main() -> std::process::ExitCode {
    cjm_worker::main(cjm_worker::About::new(), |_args| Ok(Ticker))
}
