//! Compositions under the fake host of `tests.rs`, on a paused clock: a fan-in, a
//! failure that skips dependents, a cancel mid-way, a missing field, the refusals at
//! submission; then a property test over random DAGs and random outcomes and cancels:
//! every node ends exactly once, no dependent of a failed node runs, no node starts
//! before its inputs, and every call gets exactly the outputs it named.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::composition::run::derive;
use super::tests::{fatal, options, Fake, Harness};
use super::{
    Cancellation, Composition, CompositionChange, CompositionError, CompositionEvent,
    CompositionId, CompositionNode, CompositionState, CompositionsError, JobOptions, JobState,
    NodeState, OutputRef,
};

fn node(id: &str, plugin: &str) -> CompositionNode {
    CompositionNode::new(id, plugin)
}

/// The call at the worker of `node` (by its job), once it is there.
fn call_of(h: &Harness, composition: CompositionId, node: &str) -> Option<String> {
    let job = h.jobs.composition(composition)?.node(node)?.job?;
    let call = h.jobs.journal_id(job)?;
    h.host.at_worker().contains(&call).then_some(call)
}

#[tokio::test(start_paused = true)]
async fn a_fan_in_waits_for_both_inputs_and_gets_each_bound() {
    let mut h = Harness::new(Fake::new(&[("p", 2), ("q", 1)]), options()).await;
    let id = h
        .jobs
        .submit_composition(Composition::new(vec![
            node("a", "p").kwarg("x", 1),
            node("b", "p").kwarg("x", 2),
            node("c", "q")
                .kwarg("left", OutputRef::field("a", "value"))
                .kwarg("right", OutputRef::whole("b")),
        ]))
        .unwrap();
    h.until("a and b run", |h| h.host.at_worker().len() == 2)
        .await;
    let status = h.jobs.composition(id).unwrap();
    assert_eq!(status.node("c").unwrap().state, NodeState::Pending);
    assert!(
        status.node("c").unwrap().job.is_none(),
        "no job before its inputs"
    );
    let a = call_of(&h, id, "a").unwrap();
    h.host.end(&a, Ok(json!({"value": "from a"})));
    h.settle().await;
    // One input is not enough.
    assert_eq!(
        h.jobs.composition(id).unwrap().node("c").unwrap().state,
        NodeState::Pending
    );
    let b = call_of(&h, id, "b").unwrap();
    h.host.end(&b, Ok(json!([1, 2])));
    h.until("c runs", |h| call_of(h, id, "c").is_some()).await;
    let c = call_of(&h, id, "c").unwrap();
    let kwargs = h.host.world.lock().kwargs_of[&c].clone();
    assert_eq!(kwargs["left"], json!("from a"));
    assert_eq!(kwargs["right"], json!([1, 2]));
    h.host.end(&c, Ok(json!("folded")));
    let ended = h.jobs.wait_for_composition(id).await.unwrap();
    assert_eq!(ended.state, CompositionState::Succeeded);
    assert_eq!(ended.node("c").unwrap().result, Some(json!("folded")));
    h.check().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_node_skips_its_dependents_and_failing_fast_the_rest() {
    let mut h = Harness::new(Fake::new(&[("p", 1), ("solo", 1)]), options()).await;
    let mut events = h.jobs.events_for_composition(CompositionId(1));
    let id = h
        .jobs
        .submit_composition(Composition::new(vec![
            node("a", "p"),
            node("b", "p").kwarg("in", OutputRef::whole("a")),
            node("c", "solo").kwarg("in", OutputRef::whole("b")),
            // Independent, queued behind a (p runs one at a time).
            node("d", "p"),
        ]))
        .unwrap();
    assert_eq!(id, CompositionId(1));
    h.until("a runs", |h| call_of(h, id, "a").is_some()).await;
    let a = call_of(&h, id, "a").unwrap();
    h.host.end(&a, Err(fatal("p")));
    let ended = h.jobs.wait_for_composition(id).await.unwrap();
    assert_eq!(ended.state, CompositionState::Failed);
    let states: Vec<NodeState> = ended.nodes.iter().map(|node| node.state).collect();
    assert_eq!(
        states,
        [
            NodeState::Failed,
            NodeState::Skipped,
            NodeState::Skipped,
            NodeState::Cancelled
        ]
    );
    assert!(ended
        .node("b")
        .unwrap()
        .reason
        .as_deref()
        .unwrap()
        .contains("'a'"));
    assert!(ended.node("b").unwrap().job.is_none() && ended.node("c").unwrap().job.is_none());
    let d = ended.node("d").unwrap().job.unwrap();
    assert_eq!(
        h.jobs.status(d).unwrap().cancelled,
        Some(Cancellation::WhileQueued)
    );
    // Only a ever reached a worker.
    assert_eq!(h.host.world.lock().arrived.len(), 1);
    // The events tell it in order, the end last, once.
    let mut seen = Vec::new();
    while let Some(Ok(event)) = events.next().await {
        let last = matches!(event.change, CompositionChange::Ended(_));
        seen.push(event);
        if last {
            break;
        }
    }
    assert_eq!(
        seen.last().unwrap().change,
        CompositionChange::Ended(CompositionState::Failed)
    );
    let a_failed = seen
        .iter()
        .position(|e| {
            e.node.as_deref() == Some("a")
                && matches!(
                    e.change,
                    CompositionChange::Node {
                        state: NodeState::Failed,
                        ..
                    }
                )
        })
        .unwrap();
    let b_skipped = seen
        .iter()
        .position(|e| {
            e.node.as_deref() == Some("b")
                && matches!(
                    e.change,
                    CompositionChange::Node {
                        state: NodeState::Skipped,
                        ..
                    }
                )
        })
        .unwrap();
    assert!(a_failed < b_skipped);
    assert!(seen.iter().any(|e| matches!(
        e.change,
        CompositionChange::Job {
            change: super::JobChange::State(JobState::Running),
            ..
        }
    )));
    h.check().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cancel_mid_way_stops_the_running_member_and_skips_the_rest() {
    let mut h = Harness::new(Fake::new(&[("p", 1)]), options()).await;
    let id = h
        .jobs
        .submit_composition(Composition::new(vec![
            node("a", "p"),
            node("b", "p"),
            node("c", "p").kwarg("in", OutputRef::whole("a")),
        ]))
        .unwrap();
    h.until("a runs", |h| call_of(h, id, "a").is_some()).await;
    assert!(h.jobs.cancel_composition(id).unwrap());
    let ended = h.jobs.wait_for_composition(id).await.unwrap();
    assert_eq!(ended.state, CompositionState::Cancelled);
    let job = |node: &str| {
        h.jobs
            .status(ended.node(node).unwrap().job.unwrap())
            .unwrap()
    };
    assert_eq!(job("a").cancelled, Some(Cancellation::Cooperative));
    assert_eq!(job("b").cancelled, Some(Cancellation::WhileQueued));
    assert_eq!(ended.node("c").unwrap().state, NodeState::Skipped);
    assert_eq!(
        ended.node("c").unwrap().reason.as_deref(),
        Some("the composition was cancelled")
    );
    // A second cancel finds it ended.
    assert!(!h.jobs.cancel_composition(id).unwrap());
    h.check().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_missing_field_fails_the_node_that_wants_it_naming_the_field() {
    let mut h = Harness::new(Fake::new(&[("p", 1)]), options()).await;
    let id = h
        .jobs
        .submit_composition(
            Composition::new(vec![
                node("a", "p"),
                node("b", "p").kwarg("path", OutputRef::field("a", "written_to")),
                node("c", "p").kwarg("in", OutputRef::whole("b")),
            ])
            .fail_fast(false),
        )
        .unwrap();
    h.until("a runs", |h| call_of(h, id, "a").is_some()).await;
    let a = call_of(&h, id, "a").unwrap();
    h.host.end(&a, Ok(json!({"result": "x"})));
    let ended = h.jobs.wait_for_composition(id).await.unwrap();
    let b = ended.node("b").unwrap();
    assert_eq!(b.state, NodeState::Failed);
    let message = &b.failure.as_ref().unwrap().message;
    assert!(
        message.contains("'written_to'") && message.contains("result"),
        "{message}"
    );
    assert_eq!(ended.node("c").unwrap().state, NodeState::Skipped);
    assert_eq!(ended.state, CompositionState::Failed);
    assert_eq!(ended.first_failure().unwrap().0.id, "b");
}

#[tokio::test(start_paused = true)]
async fn invalid_compositions_are_refused_whole_naming_the_node() {
    let host = Fake::new(&[("p", 1), ("off", 1)]);
    host.world.lock().disabled.insert("off".into());
    let h = Harness::new(host, options()).await;
    let refused = |composition| match h.jobs.submit_composition(composition) {
        Err(CompositionsError::Invalid(err)) => err,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(Composition::new(vec![node("a", "p"), node("b", "nope")])),
        CompositionError::NotLoaded {
            node: "b".into(),
            plugin: "nope".into()
        }
    );
    assert_eq!(
        refused(Composition::new(vec![node("a", "off")])),
        CompositionError::Disabled {
            node: "a".into(),
            plugin: "off".into()
        }
    );
    assert!(matches!(
        refused(Composition::new(vec![
            node("a", "p").kwarg("x", OutputRef::whole("b")),
            node("b", "p").kwarg("x", OutputRef::whole("a")),
        ])),
        CompositionError::Cycle { .. }
    ));
    // Nothing was queued for any of them.
    assert!(h.jobs.list().is_empty());
    // An empty composition has nothing to do: it has succeeded.
    let empty = h
        .jobs
        .submit_composition(Composition::new(Vec::new()))
        .unwrap();
    assert_eq!(
        h.jobs.wait_for_composition(empty).await.unwrap().state,
        CompositionState::Succeeded
    );
}

// ---- random DAGs -----------------------------------------------------------------------

const PLUGINS: [(&str, usize); 2] = [("gpu", 1), ("cpu", 2)];

#[derive(Debug, Clone)]
struct Shape {
    /// For each node: its plugin, and for each earlier node whether it takes its
    /// output (and how: whole, the field "value", or a field that is not there).
    nodes: Vec<(usize, Vec<Option<u8>>)>,
    fail_fast: bool,
}

fn shape() -> impl Strategy<Value = Shape> {
    (1usize..7, any::<bool>()).prop_flat_map(|(count, fail_fast)| {
        let nodes: Vec<_> = (0..count)
            .map(|at| {
                (
                    0..PLUGINS.len(),
                    prop::collection::vec(
                        prop_oneof![6 => Just(None), 2 => Just(Some(0u8)), 2 => Just(Some(1u8)), 1 => Just(Some(2u8))],
                        at,
                    ),
                )
            })
            .collect();
        nodes.prop_map(move |nodes| Shape { nodes, fail_fast })
    })
}

#[derive(Debug, Clone)]
enum Step {
    Complete(usize),
    Fail(usize),
    CancelJob(usize),
    CancelComposition(usize),
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => any::<usize>().prop_map(Step::Complete),
        2 => any::<usize>().prop_map(Step::Fail),
        1 => any::<usize>().prop_map(Step::CancelJob),
        1 => any::<usize>().prop_map(Step::CancelComposition),
        1 => (0u64..100).prop_map(Step::Advance),
    ]
}

fn name(at: usize) -> String {
    format!("n{at}")
}

fn build(shape: &Shape) -> Composition {
    let nodes = shape
        .nodes
        .iter()
        .enumerate()
        .map(|(at, (plugin, from))| {
            let mut node = CompositionNode::new(name(at), PLUGINS[*plugin].0);
            for (dep, how) in from.iter().enumerate() {
                let output = match how {
                    None => continue,
                    Some(0) => OutputRef::whole(name(dep)),
                    Some(1) => OutputRef::field(name(dep), "value"),
                    Some(_) => OutputRef::field(name(dep), "absent"),
                };
                node = node.kwarg(format!("from_{dep}"), output);
            }
            node
        })
        .collect();
    Composition::new(nodes).fail_fast(shape.fail_fast)
}

fn dags(shapes: &[Shape], steps: &[Step]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|err| err.to_string())?;
    runtime.block_on(async {
        let mut h = Harness::new(
            Fake::new(&PLUGINS),
            JobOptions::default().cancel_timeout(Duration::from_millis(40)),
        )
        .await;
        let mut events: broadcast::Receiver<CompositionEvent> = h.jobs.inner.hub.events.subscribe();
        let mut log: Vec<CompositionEvent> = Vec::new();
        let ids: Vec<CompositionId> = shapes
            .iter()
            .map(|shape| {
                h.jobs
                    .submit_composition(build(shape))
                    .map_err(|err| err.to_string())
            })
            .collect::<Result<_, _>>()?;
        for step in steps {
            let calls = h.host.at_worker();
            let pick = |n: usize| (!calls.is_empty()).then(|| calls[n % calls.len()].clone());
            match step {
                Step::Complete(n) => {
                    if let Some(call) = pick(*n) {
                        h.host.end(&call, Ok(json!({"value": call})));
                    }
                }
                Step::Fail(n) => {
                    if let Some(call) = pick(*n) {
                        let plugin = h.host.world.lock().arrived.contains(&call);
                        debug_assert!(plugin);
                        h.host.end(&call, Err(fatal("p")));
                    }
                }
                Step::CancelJob(n) => {
                    let jobs = h.jobs.list();
                    if !jobs.is_empty() {
                        h.jobs
                            .cancel(jobs[n % jobs.len()].id)
                            .map_err(|err| err.to_string())?;
                    }
                }
                Step::CancelComposition(n) => {
                    h.jobs
                        .cancel_composition(ids[n % ids.len()])
                        .map_err(|err| err.to_string())?;
                }
                Step::Advance(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            }
            h.settle().await;
            while let Ok(event) = events.try_recv() {
                log.push(event);
            }
            h.check().map_err(|err| format!("after {step:?}: {err}"))?;
        }
        // Everything left runs to its end.
        for _ in 0..1000 {
            for call in h.host.at_worker() {
                h.host.end(&call, Ok(json!({"value": call})));
            }
            h.settle().await;
            while let Ok(event) = events.try_recv() {
                log.push(event);
            }
            if ids.iter().all(|id| {
                h.jobs
                    .composition(*id)
                    .is_some_and(|c| c.state != CompositionState::Running)
            }) {
                break;
            }
        }
        h.check()?;
        for (shape, id) in shapes.iter().zip(&ids) {
            check_composition(&h, shape, *id, &log)?;
        }
        Ok(())
    })
}

fn check_composition(
    h: &Harness,
    shape: &Shape,
    id: CompositionId,
    log: &[CompositionEvent],
) -> Result<(), String> {
    let status = h.jobs.composition(id).ok_or("composition forgotten")?;
    if status.state == CompositionState::Running {
        return Err(format!("{id} never ended: {status:?}"));
    }
    if status.state != derive(&status) {
        return Err(format!(
            "{id} ended {} but its nodes say {}",
            status.state,
            derive(&status)
        ));
    }
    let mine: Vec<&CompositionEvent> = log.iter().filter(|e| e.composition == id).collect();
    let ends = mine
        .iter()
        .filter(|e| matches!(e.change, CompositionChange::Ended(_)))
        .count();
    if ends != 1
        || !matches!(
            mine.last().map(|e| &e.change),
            Some(CompositionChange::Ended(_))
        )
    {
        return Err(format!("{id}: {ends} ends, or not last"));
    }
    // Where in the log each node entered each state.
    let mut at: HashMap<(String, NodeState), usize> = HashMap::new();
    let mut finals: HashMap<String, usize> = HashMap::new();
    for (n, event) in mine.iter().enumerate() {
        if let (Some(node), CompositionChange::Node { state, .. }) = (&event.node, &event.change) {
            at.insert((node.clone(), *state), n);
            if state.is_final() {
                *finals.entry(node.clone()).or_default() += 1;
            }
        }
    }
    let world = h.host.world.lock();
    for (index, (_, from)) in shape.nodes.iter().enumerate() {
        let node = status.node(&name(index)).ok_or("node missing")?;
        if finals.get(&node.id) != Some(&1) || !node.state.is_final() {
            return Err(format!(
                "{id} node {}: {:?} final events, state {}",
                node.id,
                finals.get(&node.id),
                node.state
            ));
        }
        let deps: Vec<usize> = (0..from.len()).filter(|&dep| from[dep].is_some()).collect();
        let Some(job) = node.job else {
            // Failed without a job: only for an input naming a field that is not
            // there, once every input was there to look in.
            if node.state == NodeState::Failed {
                let all_in = deps.iter().all(|&dep| {
                    status.node(&name(dep)).map(|n| n.state) == Some(NodeState::Succeeded)
                });
                let absent = deps.iter().any(|&dep| from[dep] == Some(2));
                if !(all_in && absent) {
                    return Err(format!(
                        "{id} node {} failed without a job: {:?}",
                        node.id, node.failure
                    ));
                }
            }
            continue;
        };
        // It has a job: every input had succeeded before it was queued.
        let queued = at
            .get(&(node.id.clone(), NodeState::Running))
            .copied()
            .ok_or("no running event")?;
        for &dep in &deps {
            let dep_node = status.node(&name(dep)).ok_or("dep missing")?;
            if dep_node.state != NodeState::Succeeded {
                return Err(format!(
                    "{id} node {} ran though {} is {}",
                    node.id, dep_node.id, dep_node.state
                ));
            }
            let succeeded = at
                .get(&(dep_node.id.clone(), NodeState::Succeeded))
                .copied()
                .ok_or("no success event")?;
            if succeeded > queued {
                return Err(format!(
                    "{id} node {} queued before {} succeeded",
                    node.id, dep_node.id
                ));
            }
        }
        // And its call got exactly the outputs it named.
        let call = h.jobs.journal_id(job).ok_or("job forgotten")?;
        if let Some(kwargs) = world.kwargs_of.get(&call) {
            for &dep in &deps {
                let dep_call = h
                    .jobs
                    .journal_id(
                        status
                            .node(&name(dep))
                            .and_then(|n| n.job)
                            .ok_or("dep job")?,
                    )
                    .ok_or("dep job forgotten")?;
                let expected = match from[dep] {
                    Some(0) => json!({"value": dep_call}),
                    Some(1) => Value::String(dep_call),
                    _ => {
                        return Err(format!(
                            "{id} node {} ran with a missing field bound",
                            node.id
                        ))
                    }
                };
                if kwargs.get(&format!("from_{dep}")) != Some(&expected) {
                    return Err(format!(
                        "{id} node {}: input from {dep} is {:?}",
                        node.id,
                        kwargs.get(&format!("from_{dep}"))
                    ));
                }
            }
        }
        // A failed or cancelled node's dependents never ran.
        if matches!(node.state, NodeState::Failed | NodeState::Cancelled) {
            for (later, (_, their)) in shape.nodes.iter().enumerate().skip(index + 1) {
                if their[index].is_some() {
                    let dependent = status.node(&name(later)).ok_or("missing")?;
                    if dependent.job.is_some() {
                        return Err(format!(
                            "{id}: {} ran though {} {}",
                            dependent.id, node.id, node.state
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("CJM_JOBS_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
    ))]

    /// Two random DAGs at once, random outcomes and cancels of jobs and of whole
    /// compositions, checked as they go and at the end.
    #[test]
    fn compositions_hold_their_invariants_over_random_dags(
        shapes in prop::collection::vec(shape(), 1..3),
        steps in prop::collection::vec(step(), 0..40),
    ) {
        dags(&shapes, &steps).map_err(TestCaseError::fail)?;
    }
}
