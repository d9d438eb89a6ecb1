//! Which queued job goes next: higher priority first, first come first served within
//! a priority, waiting worth one priority level per `aging` interval, and no plugin
//! running more jobs at once than its limit.
//!
//! Aging raises every waiting job's priority at the same rate, so the order between
//! two waiting jobs never changes as time passes: a job's place is fixed by
//! `priority - submitted_at / aging` when it is queued, and an ordinary heap keeps
//! the order. A job waiting long enough passes any later one, however high its
//! priority: nothing starves.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::model::JobId;

/// One job waiting for its turn.
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    pub(crate) id: JobId,
    pub(crate) plugin: String,
    /// Submission order, for first come first served among equals (and unique, so
    /// that no two waiting jobs compare equal).
    seq: u64,
    /// Its place in line (see the module's text); higher goes first.
    rank: f64,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiting {
    /// Greater goes first: higher rank, then earlier submission.
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank
            .total_cmp(&other.rank)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// The waiting jobs, by plugin, and the plugins' running counts.
///
/// A cancelled job leaves the line at once (an ordered set, not a heap with
/// tombstones): submitting and cancelling while a plugin is busy can grow nothing.
#[derive(Debug)]
pub(crate) struct JobQueue {
    aging: Duration,
    by_plugin: HashMap<String, BTreeSet<Waiting>>,
    /// Where each waiting job stands, to take it out of line by id.
    index: HashMap<JobId, Waiting>,
    running: HashMap<String, usize>,
    next_seq: u64,
}

impl JobQueue {
    /// A queue where waiting `aging` is worth one priority level.
    pub(crate) fn new(aging: Duration) -> Self {
        JobQueue {
            aging: aging.max(Duration::from_millis(1)),
            by_plugin: HashMap::new(),
            index: HashMap::new(),
            running: HashMap::new(),
            next_seq: 0,
        }
    }

    /// Jobs waiting now.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Queue job `id` for `plugin`, submitted `at` (time since the queue's epoch).
    pub(crate) fn push(&mut self, id: JobId, plugin: &str, priority: i32, at: Duration) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let rank = f64::from(priority) - at.as_secs_f64() / self.aging.as_secs_f64();
        let waiting = Waiting {
            id,
            plugin: plugin.to_owned(),
            seq,
            rank,
        };
        if let Some(old) = self.index.insert(id, waiting.clone()) {
            // The same job queued twice would run twice: keep its newest place only.
            self.take_out(&old);
        }
        self.by_plugin
            .entry(plugin.to_owned())
            .or_default()
            .insert(waiting);
    }

    /// Move waiting job `id` by `delta` priority levels, keeping what its waiting
    /// has earned and its place among equals; whether it was waiting.
    pub(crate) fn reprioritize(&mut self, id: JobId, delta: i32) -> bool {
        let Some(mut waiting) = self.index.remove(&id) else {
            return false;
        };
        self.take_out(&waiting);
        waiting.rank += f64::from(delta);
        self.index.insert(id, waiting.clone());
        self.by_plugin
            .entry(waiting.plugin.clone())
            .or_default()
            .insert(waiting);
        true
    }

    /// Take job `id` out of the line (it was cancelled); whether it was waiting.
    pub(crate) fn remove(&mut self, id: JobId) -> bool {
        match self.index.remove(&id) {
            Some(waiting) => {
                self.take_out(&waiting);
                true
            }
            None => false,
        }
    }

    fn take_out(&mut self, waiting: &Waiting) {
        if let Some(line) = self.by_plugin.get_mut(&waiting.plugin) {
            line.remove(waiting);
            if line.is_empty() {
                self.by_plugin.remove(&waiting.plugin);
            }
        }
    }

    /// The next job that may start, given each plugin's limit on jobs at once, and
    /// count it as running. `None` when nothing waits or every waiting job's plugin is
    /// at its limit.
    pub(crate) fn pop(&mut self, limit_of: impl Fn(&str) -> usize) -> Option<Waiting> {
        let running = &self.running;
        let best = self
            .by_plugin
            .iter()
            .filter(|(plugin, _)| {
                running.get(plugin.as_str()).copied().unwrap_or(0) < limit_of(plugin)
            })
            .filter_map(|(_, line)| line.last())
            .max()?
            .clone();
        self.remove(best.id);
        *self.running.entry(best.plugin.clone()).or_default() += 1;
        Some(best)
    }

    /// A job of `plugin` that [`pop`](Self::pop) started has ended. Only for a job
    /// that was popped: the caller keeps track (a job cancelled while waiting never
    /// held a place).
    pub(crate) fn finished(&mut self, plugin: &str) {
        if let Some(count) = self.running.get_mut(plugin) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.running.remove(plugin);
            }
        }
    }

    /// Jobs of `plugin` running now.
    pub(crate) fn running(&self, plugin: &str) -> usize {
        self.running.get(plugin).copied().unwrap_or(0)
    }

    /// Every plugin with jobs running, and how many.
    #[cfg(test)]
    pub(crate) fn running_counts(&self) -> HashMap<String, usize> {
        self.running.clone()
    }

    /// Whether the queue's counts agree with its contents; what disagrees.
    #[cfg(test)]
    pub(crate) fn check(&self) -> Result<(), String> {
        let in_lines: usize = self.by_plugin.values().map(BTreeSet::len).sum();
        if in_lines != self.index.len() {
            return Err(format!(
                "{in_lines} jobs in the lines, {} in the index",
                self.index.len()
            ));
        }
        for waiting in self.index.values() {
            let listed = self
                .by_plugin
                .get(&waiting.plugin)
                .is_some_and(|line| line.contains(waiting));
            if !listed {
                return Err(format!("job {} is indexed but not in line", waiting.id));
            }
        }
        if self.by_plugin.values().any(BTreeSet::is_empty) {
            return Err(String::from("an empty line is kept"));
        }
        if self.running.values().any(|count| *count == 0) {
            return Err(String::from("a zero running count is kept"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const AGING: Duration = Duration::from_secs(10);

    fn ids(queue: &mut JobQueue, limit: usize) -> Vec<u64> {
        std::iter::from_fn(|| {
            let next = queue.pop(|_| limit)?;
            queue.finished(&next.plugin);
            Some(next.id.0)
        })
        .collect()
    }

    #[test]
    fn higher_priority_first_then_first_come() {
        let mut queue = JobQueue::new(AGING);
        queue.push(JobId(1), "p", 0, Duration::ZERO);
        queue.push(JobId(2), "p", 5, Duration::ZERO);
        queue.push(JobId(3), "p", 0, Duration::ZERO);
        queue.push(JobId(4), "p", 5, Duration::ZERO);
        assert_eq!(ids(&mut queue, 1), [2, 4, 1, 3]);
    }

    #[test]
    fn waiting_is_worth_a_level_per_aging_interval() {
        let mut queue = JobQueue::new(AGING);
        queue.push(JobId(1), "p", 0, Duration::ZERO);
        // Two levels higher, but submitted 25 s (2.5 levels) later: the old one wins.
        queue.push(JobId(2), "p", 2, Duration::from_secs(25));
        // Two levels higher, 15 s later: it wins.
        queue.push(JobId(3), "p", 2, Duration::from_secs(15));
        assert_eq!(ids(&mut queue, 1), [3, 1, 2]);
    }

    #[test]
    fn a_plugin_at_its_limit_waits_without_holding_up_others() {
        let mut queue = JobQueue::new(AGING);
        queue.push(JobId(1), "gpu", 9, Duration::ZERO);
        queue.push(JobId(2), "gpu", 9, Duration::ZERO);
        queue.push(JobId(3), "cpu", 0, Duration::ZERO);
        let first = queue.pop(|_| 1).unwrap();
        assert_eq!(first.id, JobId(1));
        // gpu is at its limit of one: cpu's job goes, gpu's second waits.
        assert_eq!(queue.pop(|_| 1).unwrap().id, JobId(3));
        assert!(queue.pop(|_| 1).is_none());
        queue.finished("gpu");
        assert_eq!(queue.pop(|_| 1).unwrap().id, JobId(2));
        assert_eq!(queue.running("gpu"), 1);
    }

    #[test]
    fn a_reordered_job_moves_by_its_new_priority_and_keeps_its_aging() {
        let mut queue = JobQueue::new(AGING);
        queue.push(JobId(1), "p", 0, Duration::ZERO);
        queue.push(JobId(2), "p", 1, Duration::from_secs(5));
        queue.push(JobId(3), "p", 0, Duration::from_secs(5));
        // 3 up to 2's level: it was queued at the same time, after it.
        assert!(queue.reprioritize(JobId(3), 1));
        // 1 up by one: it waited longer, so it now goes first.
        assert!(queue.reprioritize(JobId(1), 1));
        assert!(!queue.reprioritize(JobId(9), 1));
        queue.check().unwrap();
        assert_eq!(ids(&mut queue, 1), [1, 2, 3]);
    }

    #[test]
    fn a_removed_job_never_comes_up() {
        let mut queue = JobQueue::new(AGING);
        for id in 1..=3 {
            queue.push(JobId(id), "p", 0, Duration::ZERO);
        }
        assert!(queue.remove(JobId(2)));
        assert!(!queue.remove(JobId(2)));
        assert_eq!(queue.len(), 2);
        assert_eq!(ids(&mut queue, 1), [1, 3]);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn submitting_and_cancelling_while_busy_keeps_nothing() {
        let mut queue = JobQueue::new(AGING);
        queue.push(JobId(0), "p", 0, Duration::ZERO);
        assert!(queue.pop(|_| 1).is_some());
        for id in 1..10_000 {
            queue.push(JobId(id), "p", 0, Duration::ZERO);
            assert!(queue.remove(JobId(id)));
        }
        assert_eq!(queue.len(), 0);
        assert!(queue.by_plugin.is_empty() && queue.index.is_empty());
        queue.check().unwrap();
    }

    #[derive(Debug, Clone)]
    struct Submission {
        priority: i32,
        /// Seconds after the previous submission.
        gap: u32,
        plugin: u8,
    }

    fn submissions() -> impl Strategy<Value = Vec<Submission>> {
        prop::collection::vec(
            (-3i32..=3, 0u32..20, 0u8..3).prop_map(|(priority, gap, plugin)| Submission {
                priority,
                gap,
                plugin,
            }),
            1..60,
        )
    }

    fn rank(job: &Submission, at: Duration) -> f64 {
        f64::from(job.priority) - at.as_secs_f64() / AGING.as_secs_f64()
    }

    proptest! {
        /// Jobs arrive over time; each plugin runs `limit` at once, each job for `run`
        /// seconds. Whatever the arrivals: every job starts; whenever a job starts,
        /// no job of the same plugin waiting at that moment outranks it (order
        /// respected, priority and aging together); and so a job is never passed by
        /// one submitted more than `(its priority - ours) * aging` after it.
        #[test]
        fn jobs_start_in_rank_order_and_none_starves(
            jobs in submissions(),
            run in 1u64..8,
            limit in 1usize..3,
        ) {
            let mut arrivals = Vec::new();
            let mut at = Duration::ZERO;
            for job in &jobs {
                at += Duration::from_secs(u64::from(job.gap));
                arrivals.push(at);
            }
            let mut queue = JobQueue::new(AGING);
            let mut started: Vec<Option<Duration>> = vec![None; jobs.len()];
            let mut ends: Vec<(Duration, String)> = Vec::new();
            let mut now = Duration::ZERO;
            let mut next_arrival = 0;
            while started.iter().any(Option::is_none) {
                ends.retain(|(end, plugin)| {
                    let over = *end <= now;
                    if over {
                        queue.finished(plugin);
                    }
                    !over
                });
                while next_arrival < jobs.len() && arrivals[next_arrival] <= now {
                    let job = &jobs[next_arrival];
                    queue.push(
                        JobId(next_arrival as u64),
                        &format!("p{}", job.plugin),
                        job.priority,
                        arrivals[next_arrival],
                    );
                    next_arrival += 1;
                }
                while let Some(job) = queue.pop(|_| limit) {
                    let i = job.id.0 as usize;
                    started[i] = Some(now);
                    ends.push((now + Duration::from_secs(run), job.plugin));
                }
                now += Duration::from_secs(1);
                prop_assert!(now < Duration::from_secs(1_000_000), "stuck");
            }
            for a in 0..jobs.len() {
                for b in 0..jobs.len() {
                    if a == b || jobs[a].plugin != jobs[b].plugin {
                        continue;
                    }
                    let (start_a, start_b) = (started[a].unwrap(), started[b].unwrap());
                    // b was waiting when a started, and is still waiting after it.
                    let b_waiting = arrivals[b] <= start_a && start_b > start_a;
                    if b_waiting {
                        prop_assert!(
                            rank(&jobs[a], arrivals[a]) >= rank(&jobs[b], arrivals[b]),
                            "job {a} started before the higher-ranked waiting job {b}"
                        );
                    }
                }
            }
        }
    }
}
