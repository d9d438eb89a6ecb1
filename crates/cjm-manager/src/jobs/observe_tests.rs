//! Observability classes under the fake host: an ambient plugin's jobs are in the
//! journal only once they failed, were cancelled or were retried; a full one's
//! always.

use std::time::Duration;

use cjm_metadata::Observability;
use serde_json::json;

use super::tests::{options, worker_died, Fake, Harness};
use super::{JobId, JobState};
use crate::RetryPolicy;

/// The journal records of job `id`, by kind (`Submitted`, `State`, `Failed`, ..).
fn records_of(h: &Harness, id: JobId) -> Vec<String> {
    let call_id = h.jobs.inner.book.lock().jobs[&id].call_id.clone();
    let quoted = format!("id: {call_id:?}");
    h.jobs
        .inner
        .recorded
        .lock()
        .iter()
        .filter(|record| record.contains(&quoted))
        .map(|record| {
            let kind = record.split([' ', '{']).next().unwrap_or_default();
            match kind {
                "State" if record.contains("Running") => String::from("Running"),
                "State" if record.contains("Succeeded") => String::from("Succeeded"),
                other => other.to_owned(),
            }
        })
        .collect()
}

/// Run the call that arrives next to `result`.
async fn answer(h: &mut Harness, result: Result<serde_json::Value, crate::ManagerError>) {
    let before = h.host.world.lock().arrived.len();
    h.until("a call arrives", |h| {
        h.host.world.lock().arrived.len() > before
    })
    .await;
    let call = h.host.at_worker()[0].clone();
    h.host.end(&call, result);
}

#[tokio::test(start_paused = true)]
async fn an_ambient_plugins_successes_stay_out_of_the_journal() {
    let host = Fake::new(&[("quiet", 1), ("loud", 1)]).with(|host| {
        host.retry = RetryPolicy::up_to(1, Duration::from_millis(10));
    });
    let options = options().observability("quiet", Observability::Ambient);
    let mut h = Harness::new(host, options).await;

    let succeeded = h.jobs.submit("quiet", Default::default(), 0).unwrap();
    answer(&mut h, Ok(json!(1))).await;
    h.until("it ends", |h| h.state(succeeded).is_final()).await;

    let failed = h.jobs.submit("quiet", Default::default(), 0).unwrap();
    answer(&mut h, Err(worker_died("quiet"))).await;
    answer(&mut h, Err(worker_died("quiet"))).await;
    h.until("it ends", |h| h.state(failed).is_final()).await;

    let retried = h.jobs.submit("quiet", Default::default(), 0).unwrap();
    answer(&mut h, Err(worker_died("quiet"))).await;
    answer(&mut h, Ok(json!(3))).await;
    h.until("it ends", |h| h.state(retried).is_final()).await;

    let cancelled = h.jobs.submit("quiet", Default::default(), 0).unwrap();
    h.until("it runs", |h| h.state(cancelled) == JobState::Running)
        .await;
    // The fake's calls stop when asked.
    h.jobs.cancel(cancelled).unwrap();
    h.until("it ends", |h| h.state(cancelled).is_final()).await;

    let full = h.jobs.submit("loud", Default::default(), 0).unwrap();
    answer(&mut h, Ok(json!(4))).await;
    h.until("it ends", |h| h.state(full).is_final()).await;

    // In memory every job is there as always.
    assert_eq!(h.state(succeeded), JobState::Succeeded);
    assert_eq!(h.state(failed), JobState::Failed);
    assert_eq!(h.state(retried), JobState::Succeeded);
    assert_eq!(h.state(cancelled), JobState::Cancelled);
    assert!(
        records_of(&h, succeeded).is_empty(),
        "{:?}",
        records_of(&h, succeeded)
    );
    assert_eq!(records_of(&h, failed), ["Submitted", "Running", "Failed"]);
    assert_eq!(
        records_of(&h, retried),
        ["Submitted", "Running", "Succeeded"]
    );
    assert_eq!(
        records_of(&h, cancelled),
        ["Submitted", "Running", "Cancelled"]
    );
    assert_eq!(records_of(&h, full), ["Submitted", "Running", "Succeeded"]);
    h.check().unwrap();
}

/// What an ambient job's records were held back (a reorder) follow it into the
/// journal once it is kept, after its submission; a success takes them with it.
#[tokio::test(start_paused = true)]
async fn held_back_records_follow_an_ambient_job_only_if_it_is_kept() {
    let options = options().observability("quiet", Observability::Ambient);
    let mut h = Harness::new(Fake::new(&[("quiet", 1)]), options).await;
    let running = h.jobs.submit("quiet", Default::default(), 0).unwrap();
    h.until("it runs", |h| h.state(running) == JobState::Running)
        .await;
    let kept = h.jobs.submit("quiet", Default::default(), 0).unwrap();
    let dropped = h.jobs.submit("quiet", Default::default(), 0).unwrap();
    h.jobs.reorder(kept, 5).unwrap();
    h.jobs.reorder(dropped, 3).unwrap();
    assert!(h.jobs.cancel(kept).unwrap());
    h.until("it ends", |h| h.state(kept).is_final()).await;
    let call = h.host.at_worker()[0].clone();
    h.host.end(&call, Ok(json!(1)));
    answer(&mut h, Ok(json!(2))).await;
    h.until("it ends", |h| h.state(dropped).is_final()).await;
    assert_eq!(records_of(&h, kept), ["Submitted", "Priority", "Cancelled"]);
    assert!(
        records_of(&h, dropped).is_empty(),
        "{:?}",
        records_of(&h, dropped)
    );
    assert!(records_of(&h, running).is_empty());
    h.check().unwrap();
}
