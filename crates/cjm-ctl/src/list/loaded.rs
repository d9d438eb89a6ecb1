//! What a daemon serving CJM_HOME has loaded: `cjm-ctl list` shows it after what is
//! installed.

use anyhow::Result;
use cjm_daemon::DaemonClient;
use serde_json::{json, Value};

use crate::out::outln;
use crate::table::print_table;

/// The daemon's loaded plugins: `{socket, loaded: [{name, state, pid, running_jobs}]}`.
pub(super) fn read(client: &DaemonClient) -> Result<Value> {
    let answer = crate::daemon_link::block_on(client.get("/api/plugins"))??;
    let loaded: Vec<Value> = answer["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|plugin| plugin["loaded"] == true)
        .map(|plugin| {
            json!({
                "name": plugin["name"],
                "state": plugin["state"],
                "pid": plugin["pid"],
                "running_jobs": plugin["running_jobs"],
            })
        })
        .collect();
    Ok(json!({"socket": client.socket(), "loaded": loaded}))
}

pub(super) fn print(daemon: &Value) -> Result<()> {
    let loaded = daemon["loaded"].as_array().cloned().unwrap_or_default();
    outln!()?;
    if loaded.is_empty() {
        outln!("the daemon has no plugin loaded")?;
        return Ok(());
    }
    let cell = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let rows: Vec<[String; 4]> = loaded
        .iter()
        .map(|plugin| {
            [
                cell(&plugin["name"]),
                cell(&plugin["state"]),
                cell(&plugin["pid"]),
                cell(&plugin["running_jobs"]),
            ]
        })
        .collect();
    print_table(&["LOADED IN THE DAEMON", "STATE", "PID", "JOBS"], &rows)?;
    Ok(())
}
