//! The results: a JSON object of `{"value", "unit"}` per metric, and a table beside the
//! Python original's figures and the targets.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

/// Targets of the benchmark issue, as (metric, comparison, bound).
const TARGETS: &[(&str, &str, f64)] = &[
    ("spawn_ready_ms", "<=", 3.0),
    ("start_failure_ms", "<=", 50.0),
    ("exec_rps_c32", ">=", 40_000.0),
    ("stream_chunks_per_s", ">=", 1_000_000.0),
    ("payload_10mib_mib_s", ">=", 1_000.0),
    ("worker_idle_rss_mib", "<=", 4.0),
    ("queue_wake_ms", "<=", 1.0),
    ("parent_death_ms", "<=", 10.0),
    ("load_all_100_ms", "<=", 500.0),
    ("host_rss_100_mib", "<=", 64.0),
    // "microseconds, not milliseconds" (the validation issue).
    ("validate_config_us", "<=", 100.0),
    // The jobs issue.
    ("cancel_coop_ms", "<=", 5.0),
    ("progress_latency_ms", "<=", 10.0),
    ("job_submit_us", "<=", 20.0),
    // The daemon issue.
    ("daemon_sse_latency_ms", "<=", 5.0),
    ("daemon_idle_rss_mib", "<=", 20.0),
];

#[derive(Debug)]
pub struct Results {
    metrics: BTreeMap<String, (f64, String)>,
}

impl Results {
    pub fn new() -> Self {
        Results {
            metrics: BTreeMap::new(),
        }
    }

    pub fn insert(&mut self, name: &str, value: f64, unit: &str) {
        self.metrics
            .insert(name.to_owned(), (value, unit.to_owned()));
    }

    fn get(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).map(|(value, _)| *value)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let mut object = Map::new();
        for (name, (value, unit)) in &self.metrics {
            object.insert(name.clone(), json!({"value": finite(*value), "unit": unit}));
        }
        object.insert(
            String::from("machine"),
            json!({
                "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
                "date": today(),
            }),
        );
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(object))?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn print_table(&self) {
        println!(
            "{:<22} {:>14} {:>14} {:>9}  {:<10} target",
            "metric", "ours", "original", "ratio", "unit"
        );
        for (name, (value, unit)) in &self.metrics {
            if name.starts_with("python_") {
                continue;
            }
            let original = self.get(&format!("python_{name}"));
            let ratio = original
                .filter(|o| *o > 0.0 && *value > 0.0)
                .map(|o| {
                    if higher_is_better(unit) {
                        value / o
                    } else {
                        o / value
                    }
                })
                .map(|r| format!("{r:.1}x"))
                .unwrap_or_default();
            let target = TARGETS
                .iter()
                .find(|(metric, _, _)| metric == name)
                .map(|(_, op, bound)| {
                    let met = if *op == "<=" {
                        value <= bound
                    } else {
                        value >= bound
                    };
                    format!("{op} {bound} {}", if met { "met" } else { "MISSED" })
                })
                .unwrap_or_default();
            println!(
                "{name:<22} {:>14} {:>14} {ratio:>9}  {unit:<10} {target}",
                format_number(*value),
                original
                    .map(format_number)
                    .unwrap_or_else(|| String::from("-")),
            );
        }
        // Our native workers talk over a Unix socket: that floor is the fair one.
        for floor_name in ["floor_rtt_us", "floor_rtt_unix_us"] {
            if let (Some(p50), Some(floor)) = (self.get("exec_p50_us"), self.get(floor_name)) {
                let multiple = p50 / floor;
                // The serving-model issue's bound is on the Unix floor, native workers' own.
                let bound = if floor_name == "floor_rtt_unix_us" {
                    1.5
                } else {
                    2.5
                };
                let met = if multiple <= bound { "met" } else { "MISSED" };
                println!("exec_p50_us is {multiple:.2} x {floor_name} (target <= {bound}: {met})");
            }
        }
        if let (Some(ours), Some(bare)) = (
            self.get("exec_rps_c32"),
            self.get("exec_rps_c32_bare_hyper"),
        ) {
            let ratio = ours / bare;
            let met = if ratio >= 0.6 { "met" } else { "MISSED" };
            println!("exec_rps_c32 is {ratio:.2} x exec_rps_c32_bare_hyper (target >= 0.6: {met})");
        }
        if let (Some(ours), Some(bare)) =
            (self.get("exec_p50_us"), self.get("exec_p50_bare_hyper_us"))
        {
            println!("exec_p50_us is {:.2} x exec_p50_bare_hyper_us", ours / bare);
        }
        if let (Some(remote), Some(local)) =
            (self.get("remote_exec_p50_us"), self.get("exec_p50_us"))
        {
            let multiple = remote / local;
            let met = if multiple <= 2.0 { "met" } else { "MISSED" };
            println!(
                "remote_exec_p50_us (TLS over TCP) is {multiple:.2} x exec_p50_us (Unix socket) \
                 (target <= 2: {met})"
            );
        }
        if let (Some(idle), Some(spawn)) = (self.get("idle_restart_ms"), self.get("spawn_ready_ms"))
        {
            println!(
                "idle_restart_ms is {:.2} x spawn_ready_ms (a stopped worker's next call)",
                idle / spawn
            );
        }
        if let (Some(forced), Some(spawn)) =
            (self.get("cancel_forced_ms"), self.get("spawn_ready_ms"))
        {
            let multiple = forced / spawn;
            let met = if multiple <= 2.0 { "met" } else { "MISSED" };
            println!("cancel_forced_ms is {multiple:.2} x spawn_ready_ms (target <= 2: {met})");
        }
        self.print_daemon_ratios();
        println!("(ratio: how many times better ours is than the original)");
    }
}

impl Results {
    /// The daemon's figures beside their in-process counterparts of the same run.
    fn print_daemon_ratios(&self) {
        if let (Some(api), Some(local)) = (
            self.get("daemon_submit_running_us"),
            self.get("job_submit_running_us"),
        ) {
            let queued = self
                .get("job_submit_us")
                .map(|submit| format!("; job_submit_us {submit:.2}"))
                .unwrap_or_default();
            println!(
                "daemon_submit_running_us is {:.2} x job_submit_running_us (in-process, same \
                 run{queued})",
                api / local
            );
        }
        if let (Some(daemon), Some(local)) = (
            self.get("cli_exec_daemon_ms"),
            self.get("cli_exec_local_ms"),
        ) {
            println!(
                "cjm-ctl exec through the daemon takes {:.2} x the time of --local \
                 ({:.1} ms saved by the warm worker)",
                daemon / local,
                local - daemon
            );
        }
    }
}

fn higher_is_better(unit: &str) -> bool {
    unit.ends_with("/s")
}

fn finite(value: f64) -> Value {
    if value.is_finite() {
        json!(value)
    } else {
        Value::Null
    }
}

fn format_number(value: f64) -> String {
    if !value.is_finite() {
        String::from("n/a")
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
