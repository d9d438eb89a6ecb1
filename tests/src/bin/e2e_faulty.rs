#![allow(clippy::print_stderr, clippy::print_stdout)] // a fixture: its output is the log the test reads back
//! A plugin that misbehaves on request, for fault tests: `execute(action, ..)` with
//! action `panic`, `sleep` (ms; deaf to cancellation), `exit` (code), `abort` (words
//! printed first), `spawn_child` (starts `sleep` and returns its pid), `pid`, `nan` (a result holding NaN),
//! `transient` / `resource` (fail with that category), `flaky` (file, n: fails
//! transiently until called the n-th time, counting in the file); every action, given
//! kwarg `started_file`, first writes that file (the worker's pid): the call has
//! reached the plugin. `execute_stream` with kwarg
//! `progress_file` streams without end, writing the count of chunks produced to that
//! file, one chunk each `interval_ms`; with kwarg `tell_job` it streams two chunks
//! naming the job the call's envelope is for. With plugin argument `--crash-at-start` it
//! exits before serving, with `--crash-at-start-if PATH` only while PATH exists;
//! with `--never-ready` it hangs before serving, with `--hold-start-while PATH` only
//! while PATH exists (writing `PATH.held` once it waits); with
//! `--no-parent-watch` it does not follow its host's pid. With `--schema` it declares a
//! config schema (`level`: integer 0..=9) that its own `initialize` never checks, so
//! only the worker can refuse a configuration; with `--broken-schema` it declares one
//! that is not valid JSON Schema; with `--schema-v2` the next version of `--schema`,
//! whose `level` is a word (`low` | `high`, default `low`). Action `hold_memory`
//! (`mib`, `while_file`) allocates and touches that many MiB and holds them while
//! `while_file` exists (having written `started_file` if given), then frees them. A
//! configuration with `hold_while` (a path) has its `initialize` wait while that path
//! exists (writing `PATH.held` once it waits). Its lifecycle hooks note themselves in
//! the file named by the configuration's `hook_log`; its prefetch reports
//! `prefetch_steps` steps, or stalls with `prefetch_stall`.

use std::process::ExitCode;
use std::time::Duration;

use cjm_interface::{Call, ChunkIter, ConfigMap, Plugin, PluginError};
use serde_json::{json, Value};

#[derive(Debug, Default)]
struct Faulty {
    config: ConfigMap,
    schema: Option<Value>,
}

impl Faulty {
    /// Append `what` to the file named by the configuration's `hook_log`.
    fn note(&self, what: &str) {
        if let Some(Value::String(log)) = self.config.get("hook_log") {
            use std::io::Write;
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
            {
                let _ = writeln!(file, "{what}");
            }
        }
    }
}

impl Plugin for Faulty {
    fn name(&self) -> &str {
        "faulty"
    }

    fn version(&self) -> &str {
        "0.0.1"
    }

    fn initialize(&mut self, config: ConfigMap) -> Result<(), PluginError> {
        if config.contains_key("refuse") {
            return Err(PluginError::invalid_config("refusing this configuration"));
        }
        if let Some(Value::String(hold)) = config.get("hold_while") {
            hold_while(std::path::Path::new(hold));
        }
        self.config = config;
        Ok(())
    }

    fn execute(&self, call: Call) -> Result<Value, PluginError> {
        let action: String = call.required(0, "action")?;
        // Tests wait for this file instead of guessing when the call has started.
        if let Some(started) = call.optional::<String>(usize::MAX, "started_file")? {
            std::fs::write(&started, std::process::id().to_string())?;
        }
        match action.as_str() {
            "panic" => panic!("deliberate panic in faulty plugin"),
            "sleep" => {
                let ms: u64 = call.required(1, "ms")?;
                std::thread::sleep(Duration::from_millis(ms));
                Ok(json!({"slept_ms": ms}))
            }
            // Cooperative: a progress report every `step_ms` for `steps` steps, stopping
            // at the first step after a cancel.
            "steps" => {
                let steps: u64 = call.required(1, "steps")?;
                let step_ms: u64 = call.or(2, "step_ms", 20)?;
                let control = call.control();
                for step in 0..steps {
                    control.check_cancelled()?;
                    control.report_progress(
                        step as f64 / steps as f64,
                        format!("step {step} of {steps}"),
                    );
                    control.wait_cancelled(Duration::from_millis(step_ms));
                }
                if let Some(done_ms) = call.optional::<u64>(usize::MAX, "then_done_ms")? {
                    // All done by its own account, and still a moment from its answer.
                    control.report_progress(1.0, "done");
                    control.wait_cancelled(Duration::from_millis(done_ms));
                }
                Ok(json!({"steps": steps}))
            }
            "exit" => std::process::exit(call.or(1, "code", 3)?),
            // Last words, then abort(): what a native library does when it gives up.
            "abort" => {
                let words: String = call.required(1, "words")?;
                eprintln!("{words}");
                std::process::abort()
            }
            "spawn_child" => {
                let child = std::process::Command::new("sleep")
                    .arg("1000")
                    .spawn()
                    .map_err(|err| PluginError::failed(err.to_string()))?;
                Ok(json!({"child_pid": child.id()}))
            }
            "pid" => Ok(json!({"pid": std::process::id()})),
            "hold_memory" => {
                let mib: usize = call.required(1, "mib")?;
                let while_file: String = call.required(2, "while_file")?;
                // Touched page by page, so that it is resident, not only reserved.
                let held = vec![1u8; mib << 20];
                hold_while(std::path::Path::new(&while_file));
                Ok(json!({"held_mib": held.len() >> 20}))
            }
            // Diagnostics: `lines` steps of a `tracing` record and a printed line, each
            // naming `tag`, `step_ms` apart; with kwarg `wait_for` (a path), first
            // waits (up to 10 s) until that file exists, so two calls can be made to
            // run at once.
            "chatty" => {
                let tag: String = call.required(1, "tag")?;
                let lines: u64 = call.or(2, "lines", 5)?;
                let step_ms: u64 = call.or(3, "step_ms", 10)?;
                if let Some(other) = call.optional::<String>(usize::MAX, "wait_for")? {
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    while !std::path::Path::new(&other).exists()
                        && std::time::Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                for line in 0..lines {
                    tracing::info!(step = line, "{tag} record {line}");
                    println!("{tag} printed {line}");
                    std::thread::sleep(Duration::from_millis(step_ms));
                }
                Ok(json!({"tag": tag, "lines": lines}))
            }
            // What the worker's environment says of one variable.
            "env" => {
                let name: String = call.required(1, "name")?;
                Ok(json!({"value": std::env::var(&name).ok()}))
            }
            "transient" => Err(PluginError::transient("the service is busy").with_retry_after(0.5)),
            "resource" => Err(PluginError::resource("out of GPU memory")),
            "flaky" => {
                let file: String = call.required(1, "file")?;
                let succeed_at: u64 = call.required(2, "n")?;
                let calls = std::fs::read_to_string(&file)
                    .ok()
                    .and_then(|text| text.trim().parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                std::fs::write(&file, calls.to_string())?;
                if calls < succeed_at {
                    return Err(PluginError::transient(format!("busy (call {calls})")));
                }
                Ok(json!({"calls": calls}))
            }
            // serde_json turns a NaN into null as the Value is built: what a native
            // plugin returns is always serialisable.
            "nan" => Ok(json!({"value": f64::NAN})),
            other => Err(PluginError::invalid_argument(format!(
                "unknown action {other}"
            ))),
        }
    }

    fn execute_stream(&self, call: Call) -> Result<ChunkIter<'_>, PluginError> {
        if let Some(progress) = call.optional::<String>(usize::MAX, "progress_file")? {
            let interval = Duration::from_millis(call.or(usize::MAX, "interval_ms", 1)?);
            return Ok(Box::new((0u64..).map(move |i| {
                std::thread::sleep(interval);
                std::fs::write(&progress, (i + 1).to_string())?;
                Ok(json!({"chunk": i}))
            })));
        }
        if call.optional::<bool>(usize::MAX, "tell_job")? == Some(true) {
            // Each chunk says which job the host ran the stream for (its envelope).
            let job = call.job_id().map(str::to_owned);
            return Ok(Box::new(
                (0..2).map(move |i| Ok(json!({"chunk": i, "job": job}))),
            ));
        }
        let fail_after: u64 = call.or(0, "fail_after", 2)?;
        Ok(Box::new((0..=fail_after).map(move |i| {
            if i == fail_after {
                Err(PluginError::failed(format!(
                    "stream broke after {i} chunks"
                )))
            } else {
                Ok(json!({"chunk": i}))
            }
        })))
    }

    fn reconfigure(&mut self, old: ConfigMap, new: ConfigMap) -> Result<(), PluginError> {
        self.note(&format!(
            "reconfigure {} -> {}",
            Value::Object(old),
            Value::Object(new.clone())
        ));
        self.initialize(new)
    }

    fn on_enable(&mut self) -> Result<(), PluginError> {
        self.note("on_enable");
        Ok(())
    }

    fn on_disable(&mut self) -> Result<(), PluginError> {
        self.note("on_disable");
        Ok(())
    }

    /// `prefetch_steps` reports, 20 ms apart; with `prefetch_stall`, one report and
    /// then silence.
    fn prefetch(&self, control: &cjm_interface::CallControl) -> Result<(), PluginError> {
        self.note("prefetch");
        if self.config.contains_key("prefetch_stall") {
            control.report_progress(0.1, "started");
            std::thread::sleep(Duration::from_secs(3600));
        }
        let steps = self
            .config
            .get("prefetch_steps")
            .and_then(Value::as_u64)
            .unwrap_or(3);
        for step in 1..=steps {
            std::thread::sleep(Duration::from_millis(20));
            control.report_progress(step as f64 / steps as f64, format!("file {step}"));
        }
        Ok(())
    }

    fn config_options(&self) -> Value {
        json!({"model": {"options": [{"value": "tiny", "label": "Tiny"}], "constraints": {}}})
    }

    fn cleanup(&mut self) -> Result<(), PluginError> {
        // Tests check that cleanup really runs when a plugin is unloaded.
        if let Some(Value::String(marker)) = self.config.get("cleanup_marker") {
            std::fs::write(marker, "cleaned")?;
        }
        Ok(())
    }

    fn current_config(&self) -> Value {
        Value::Object(self.config.clone())
    }

    fn config_schema(&self) -> Value {
        self.schema.clone().unwrap_or_else(|| json!({}))
    }
}

/// Serve without following the host's pid (no pidfd, no poll), so that only the
/// kernel's parent-death signal can end the worker when its host dies.
fn serve_without_parent_watch() -> ExitCode {
    // SAFETY: this runs first thing in `main` (its first line calls it), before any
    // thread is started.
    let Ok(hand_over) = (unsafe { cjm_worker::HandOver::take() }) else {
        return ExitCode::FAILURE;
    };
    let Ok(args) = cjm_worker::WorkerArgs::parse(std::env::args().skip(1)) else {
        return ExitCode::FAILURE;
    };
    let options = cjm_worker::ServeOptions::new()
        .port(args.port.unwrap_or(0))
        .hand_over(hand_over);
    match cjm_worker::serve(Faulty::default(), options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("faulty: {err}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    if std::env::args().any(|arg| arg == "--no-parent-watch") {
        return serve_without_parent_watch();
    }
    cjm_worker::main(cjm_worker::About::default(), |args| {
        if args.iter().any(|arg| arg == "--crash-at-start") {
            eprintln!("faulty: crashing at start as asked");
            std::process::exit(7);
        }
        if let Some(marker) = args
            .iter()
            .position(|arg| arg == "--crash-at-start-if")
            .and_then(|at| args.get(at + 1))
        {
            if std::path::Path::new(marker).exists() {
                eprintln!("faulty: crashing at start as {marker} exists");
                std::process::exit(7);
            }
        }
        if args.iter().any(|arg| arg == "--never-ready") {
            std::thread::sleep(Duration::from_secs(3600));
        }
        if let Some(hold) = args
            .iter()
            .position(|arg| arg == "--hold-start-while")
            .and_then(|at| args.get(at + 1))
        {
            hold_while(std::path::Path::new(hold));
        }
        let schema = if args.iter().any(|arg| arg == "--schema") {
            Some(json!({
                "type": "object",
                "properties": {
                    "level": {"type": "integer", "minimum": 0, "maximum": 9, "default": 0},
                    "cleanup_marker": {"type": "string"},
                },
            }))
        } else if args.iter().any(|arg| arg == "--schema-v2") {
            Some(json!({
                "type": "object",
                "properties": {
                    "level": {"type": "string", "enum": ["low", "high"], "default": "low"},
                    "cleanup_marker": {"type": "string"},
                },
            }))
        } else if args.iter().any(|arg| arg == "--broken-schema") {
            Some(json!({"properties": {"level": {"type": "integr"}}}))
        } else {
            None
        };
        Ok(Faulty {
            schema,
            ..Faulty::default()
        })
    })
}

/// Wait while `hold` exists, having written `hold.held` (this pid) once waiting.
fn hold_while(hold: &std::path::Path) {
    if hold.exists() {
        let _ = std::fs::write(hold.with_extension("held"), std::process::id().to_string());
        while hold.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
