//! `cjm-ctl run FILE.yaml`: a composition (jobs that feed each other) from a YAML
//! file, each node's progress on stderr, the results at the end.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use argh::FromArgs;
use cjm_manager::jobs::{
    Composition, CompositionChange, CompositionEvent, CompositionState, CompositionStatus,
    JobChange, JobOptions, JobState, Jobs, NodeState,
};
use cjm_manager::{ManagerOptions, PluginManager};
use serde_json::{json, Value};

use crate::job_ui::{Ended, Interrupts, CANCELLING};
use crate::out::outln;

/// Run a composition written in YAML: nodes (id, plugin, args, kwargs, priority),
/// whose inputs may be other nodes' outputs (`$output: NODE` with `field: NAME`). Each
/// node's progress goes to stderr, the results to stdout at the end. Ctrl-C cancels
/// the composition, a second Ctrl-C forces its running jobs. Exit status as exec's:
/// 0 succeeded, the first failed node's category (65, 69, 70, 75), 130 cancelled.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "run")]
pub struct RunCommand {
    /// the composition, a YAML file
    #[argh(positional)]
    file: PathBuf,
    /// print the results as JSON
    #[argh(switch)]
    json: bool,
}

/// The composition in `text` (YAML), or why it is not one.
pub(crate) fn parse(text: &str) -> Result<Composition, serde_norway::Error> {
    serde_norway::from_str(text)
}

pub fn run(command: RunCommand) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&command.file)
        .with_context(|| format!("cannot read {}", command.file.display()))?;
    let composition =
        parse(&text).with_context(|| format!("{} is not a composition", command.file.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let manager = PluginManager::new(ManagerOptions::from_env()?);
        manager.discover_manifests();
        let mut interrupts = Interrupts::new()?;
        let ended = match load(&manager, &composition, &mut interrupts).await {
            Err(ended) => ended,
            Ok(()) => match Jobs::new(manager.clone(), JobOptions::default()).await {
                Err(err) => Ended::failed(None, err),
                Ok(jobs) => {
                    run_composition(&jobs, composition, command.json, &mut interrupts).await
                }
            },
        };
        manager.shutdown().await;
        Ok(ended.report())
    })
}

/// Load every plugin the composition calls, once each.
async fn load(
    manager: &PluginManager,
    composition: &Composition,
    interrupts: &mut Interrupts,
) -> Result<(), Ended> {
    let plugins: BTreeSet<&str> = composition
        .nodes
        .iter()
        .map(|node| node.plugin.as_str())
        .collect();
    for plugin in plugins {
        if manager.is_loaded(plugin) {
            continue;
        }
        tokio::select! {
            loaded = manager.load_plugin(plugin, None) => {
                loaded.map_err(|err| Ended::failed(err.category(), err))?;
            }
            _ = interrupts.next() => return Err(Ended::Cancelled { how: None }),
        }
    }
    Ok(())
}

async fn run_composition(
    jobs: &Jobs,
    composition: Composition,
    as_json: bool,
    interrupts: &mut Interrupts,
) -> Ended {
    // Subscribed before it exists, so that its first nodes' start is seen.
    let mut events = jobs.composition_events();
    let id = match jobs.submit_composition(composition) {
        Ok(id) => id,
        Err(err) => return Ended::failed(Some(cjm_manager::ErrorCategory::UserInput), err),
    };
    let mut events_open = true;
    // Its end is sent to listeners before its waiters are woken: seen here or not.
    let mut end_seen = false;
    let outcome = {
        let wait = jobs.wait_for_composition(id);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                outcome = &mut wait => break outcome,
                event = events.next(), if events_open => match event {
                    Some(Ok(event)) if event.composition == id => {
                        end_seen |= matches!(event.change, CompositionChange::Ended(_));
                        show(&event);
                    }
                    Some(_) => {}
                    None => events_open = false,
                },
                seen = interrupts.next() => {
                    if seen == 1 {
                        eprintln!("{CANCELLING}");
                        if let Err(err) = jobs.cancel_composition(id) {
                            tracing::warn!("{err}");
                        }
                    } else {
                        eprintln!("cjm-ctl: forcing: killing the workers of the running nodes");
                        for node in jobs.composition(id).map(|c| c.nodes).unwrap_or_default() {
                            if let (NodeState::Running, Some(job)) = (node.state, node.job) {
                                if let Err(err) = jobs.cancel_now(job) {
                                    tracing::warn!("{err}");
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    // The events up to its end are all sent by now (before its waiters were told):
    // what is left of them is shown, up to the end.
    while events_open && !end_seen {
        match events.next().await {
            Some(Ok(event)) if event.composition == id => {
                show(&event);
                if matches!(event.change, CompositionChange::Ended(_)) {
                    break;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => events_open = false,
        }
    }
    jobs.shutdown().await;
    let status = match outcome {
        Ok(status) => status,
        Err(err) => return Ended::failed(None, err),
    };
    if let Err(err) = print_results(&status, jobs.composition_journal_id(id), as_json) {
        return Ended::unprinted(err);
    }
    match status.state {
        CompositionState::Succeeded => Ended::Done,
        CompositionState::Cancelled => Ended::Cancelled { how: None },
        _ => match status.first_failure() {
            Some((node, failure)) => Ended::failed(
                Some(failure.category),
                anyhow::anyhow!(
                    "node '{}' ({}) failed: {}",
                    node.id,
                    node.plugin,
                    failure.message
                ),
            ),
            None => Ended::failed(
                None,
                anyhow::anyhow!("the composition ended {}", status.state),
            ),
        },
    }
}

/// One line on stderr per node change and progress report.
fn show(event: &CompositionEvent) {
    let node = event.node.as_deref().unwrap_or("-");
    match &event.change {
        CompositionChange::Node { state, job } => match job {
            Some(job) if *state == NodeState::Running => eprintln!("[{node}] queued as {job}"),
            _ => eprintln!("[{node}] {state}"),
        },
        CompositionChange::Job {
            change: JobChange::Progress { fraction, message },
            ..
        } => {
            if *fraction >= 0.0 {
                eprintln!("[{node}] {:>3.0}% {message}", fraction * 100.0);
            } else {
                eprintln!("[{node}] {message}");
            }
        }
        CompositionChange::Job {
            change: JobChange::Blocked(Some(reason)),
            ..
        } => eprintln!("[{node}] waiting: {reason}"),
        CompositionChange::Job {
            change: JobChange::State(state),
            ..
        } if !state.is_final() && *state != JobState::Queued => eprintln!("[{node}] {state}"),
        CompositionChange::Ended(state) => eprintln!("composition {state}"),
        _ => {}
    }
}

fn print_results(
    status: &CompositionStatus,
    journal_id: Option<String>,
    as_json: bool,
) -> Result<(), crate::out::OutError> {
    if as_json {
        let nodes: serde_json::Map<String, Value> = status
            .nodes
            .iter()
            .map(|node| {
                (
                    node.id.clone(),
                    json!({
                        "plugin": node.plugin,
                        "state": node.state.as_str(),
                        "result": node.result,
                        "error": node.failure.as_ref().map(|failure| json!({
                            "category": failure.category.as_str(),
                            "message": failure.message,
                        })),
                        "reason": node.reason,
                    }),
                )
            })
            .collect();
        let text = serde_json::to_string_pretty(&json!({
            "composition": journal_id,
            "state": status.state.as_str(),
            "nodes": nodes,
        }))
        .unwrap_or_default();
        return outln!("{text}");
    }
    for node in &status.nodes {
        let detail = match (&node.result, &node.failure, &node.reason) {
            (Some(result), _, _) => one_line(&result.to_string()),
            (_, Some(failure), _) => format!("{} ({})", failure.message, failure.category.as_str()),
            (_, _, Some(reason)) => reason.clone(),
            _ => String::new(),
        };
        outln!("{}\t{}\t{detail}", node.id, node.state)?;
    }
    Ok(())
}

/// How much of a node's result a line shows; `--json` prints all of it.
const RESULT_SHOWN: usize = 200;

/// `text` cut to [`RESULT_SHOWN`] characters, saying how much was left out: a node's
/// result may be a whole document, and a summary line is no place for it.
fn one_line(text: &str) -> String {
    match text.char_indices().nth(RESULT_SHOWN) {
        None => text.to_owned(),
        Some((cut, _)) => format!(
            "{}... ({} bytes in all; --json prints them)",
            &text[..cut],
            text.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_result_is_cut_on_its_summary_line_saying_so() {
        assert_eq!(one_line("{\"words\":9}"), "{\"words\":9}");
        let long = format!("\"{}\"", "é".repeat(300));
        let shown = one_line(&long);
        let prefix: String = long.chars().take(RESULT_SHOWN).collect();
        assert!(shown.starts_with(&prefix), "{shown}");
        assert!(shown.ends_with(&format!(
            "... ({} bytes in all; --json prints them)",
            long.len()
        )));
        assert_eq!(
            shown.chars().count(),
            RESULT_SHOWN + "... (602 bytes in all; --json prints them)".chars().count()
        );
    }

    #[test]
    fn the_example_pipeline_is_a_composition() {
        let text = include_str!("../../../examples/pipeline.yaml");
        let composition = parse(text).unwrap();
        assert_eq!(composition.nodes.len(), 3);
        assert_eq!(composition.nodes[1].inputs_from(), ["write"]);
        assert_eq!(
            composition.nodes[2].target,
            cjm_manager::jobs::NodeTarget::Task {
                task: "text-statistics".into(),
                method: "count_file".into()
            }
        );
    }

    #[test]
    fn a_bad_reference_is_refused_where_it_is() {
        let err =
            parse("nodes:\n  - id: a\n    plugin: p\n    kwargs: {x: {$output: 3}}\n").unwrap_err();
        assert!(err.to_string().contains("$output"), "{err}");
    }
}
