//! The queue's verbs under the fake host: reorder, stats, the block reason and the
//! cancel phases as events.

use std::time::Duration;

use serde_json::json;

use super::tests::{options, Fake, Harness};
use super::{BlockReason, CancelPhase, JobChange, JobOptions, JobState, JobsError};

#[tokio::test(start_paused = true)]
async fn a_reordered_job_goes_first_and_only_a_queued_job_can_be() {
    let mut h = Harness::new(Fake::new(&[("p", 1)]), options()).await;
    let running = h
        .jobs
        .submit("p", cjm_interface::CallArgs::new(), 0)
        .unwrap();
    let first = h
        .jobs
        .submit("p", cjm_interface::CallArgs::new(), 0)
        .unwrap();
    let second = h
        .jobs
        .submit("p", cjm_interface::CallArgs::new(), 0)
        .unwrap();
    h.until("the first job runs", |h| h.host.at_worker().len() == 1)
        .await;
    h.jobs.reorder(second, 5).unwrap();
    assert_eq!(h.jobs.status(second).unwrap().priority, 5);
    assert!(matches!(
        h.jobs.reorder(running, 9),
        Err(JobsError::NotPending {
            state: JobState::Running,
            ..
        })
    ));
    let stats = h.jobs.stats();
    assert_eq!((stats.queued, stats.running), (2, 1));
    let call = h.host.at_worker()[0].clone();
    h.host.end(&call, Ok(json!(1)));
    h.until("the reordered one runs", |h| {
        h.state(second) == JobState::Running
    })
    .await;
    assert_eq!(h.state(first), JobState::Queued);
    assert_eq!(h.jobs.stats().succeeded, 1);
    h.check().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_job_behind_its_plugins_limit_says_so_once_and_a_cancel_tells_its_phases() {
    let host = Fake::new(&[("p", 1)]);
    host.world.lock().cooperative = false;
    let mut h = Harness::new(
        host,
        JobOptions::default().cancel_timeout(Duration::from_millis(50)),
    )
    .await;
    let mut events = h.jobs.events();
    let running = h
        .jobs
        .submit("p", cjm_interface::CallArgs::new(), 0)
        .unwrap();
    h.until("it runs", |h| h.state(running) == JobState::Running)
        .await;
    let waiting = h
        .jobs
        .submit("p", cjm_interface::CallArgs::new(), 0)
        .unwrap();
    // A plugin that ignores its cancel: asked, then forced.
    h.jobs.cancel(running).unwrap();
    h.until("it ended", |h| h.state(running) == JobState::Cancelled)
        .await;
    h.until("the next runs", |h| h.state(waiting) == JobState::Running)
        .await;
    let mut blocked = Vec::new();
    let mut phases = Vec::new();
    while let Ok(Some(Ok(event))) = tokio::time::timeout(Duration::ZERO, events.next()).await {
        match event.change {
            JobChange::Blocked(reason) => blocked.push((event.job, reason)),
            JobChange::Cancel(phase) => phases.push((event.job, phase)),
            _ => {}
        }
    }
    assert_eq!(
        blocked,
        [(
            waiting,
            Some(BlockReason::Concurrency {
                running: 1,
                limit: 1
            })
        )]
    );
    assert_eq!(
        phases,
        [
            (running, CancelPhase::Cooperative),
            (running, CancelPhase::Force),
            (running, CancelPhase::Completed)
        ]
    );
    h.check().unwrap();
}
