use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use argh::FromArgs;
use cjm_scheduling::LocalMonitor;
use serde_json::Value;

use crate::out::outln;

/// Show this machine's telemetry as the scheduler sees it.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "stats")]
pub struct StatsCommand {
    /// print JSON (the scheduler's keys)
    #[argh(switch)]
    json: bool,
}

pub fn run(command: StatsCommand) -> Result<ExitCode> {
    let monitor = LocalMonitor::new()?;
    // CPU load is measured between two readings; a short wait gives the second
    // one something to measure.
    let _ = monitor.snapshot();
    std::thread::sleep(Duration::from_millis(250));
    let stats = serde_json::to_value(monitor.snapshot())?;
    if command.json {
        outln!("{}", serde_json::to_string_pretty(&stats)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Printed key by key from the serialised form, so that figures added to
    // SystemStats show up without changes here.
    if let Value::Object(fields) = stats {
        let width = fields.keys().map(String::len).max().unwrap_or(0);
        for (key, value) in fields {
            let value = match value {
                Value::Number(number) => match number.as_f64() {
                    Some(float) if number.is_f64() => format!("{float:.1}"),
                    _ => number.to_string(),
                },
                other => other.to_string(),
            };
            outln!("{key:<width$}  {value}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
