//! What the manager does when a worker dies or a call hangs.

use std::time::Duration;

/// Fault handling for one plugin (or, as [`ManagerOptions::fault_policy`], for all).
/// Built from [`FaultPolicy::default`] (no timeout, no restarts) with the `with_`
/// methods; fields may be added in later releases.
///
/// [`ManagerOptions::fault_policy`]: crate::ManagerOptions::fault_policy
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct FaultPolicy {
    /// The longest an execution may take; `None`: no limit. A stream's limit applies
    /// to the wait for each chunk. [`execute_plugin_with_timeout`] overrides it.
    ///
    /// [`execute_plugin_with_timeout`]: crate::PluginManager::execute_plugin_with_timeout
    pub call_timeout: Option<Duration>,
    /// What a timed-out call does to the worker.
    pub on_timeout: OnTimeout,
    /// Whether a dead worker is started again.
    pub restart: RestartPolicy,
    /// Whether a call that failed with a `transient` error (the plugin said so, or
    /// the connection broke) is made again.
    pub retry: RetryPolicy,
}

impl FaultPolicy {
    /// This policy with a limit on every execution (a stream's: on each chunk).
    pub fn with_call_timeout(mut self, limit: Duration) -> Self {
        self.call_timeout = Some(limit);
        self
    }

    /// This policy with `on_timeout` for calls past their limit.
    pub fn with_on_timeout(mut self, on_timeout: OnTimeout) -> Self {
        self.on_timeout = on_timeout;
        self
    }

    /// This policy with `restart` for dead workers.
    pub fn with_restart(mut self, restart: RestartPolicy) -> Self {
        self.restart = restart;
        self
    }

    /// This policy with `retry` for calls that failed with a transient error.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// Making a call again after a `transient` failure (never after other ones: a
/// caller's mistake or a plugin's bug fails the same way again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts after the first (0: none, the default).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
}

impl RetryPolicy {
    /// No retries (the default).
    pub const NEVER: RetryPolicy = RetryPolicy {
        attempts: 0,
        backoff: Duration::from_millis(100),
    };

    /// Up to `attempts` retries, the first after `backoff`.
    pub fn up_to(attempts: u32, backoff: Duration) -> Self {
        RetryPolicy { attempts, backoff }
    }

    /// The wait before retry number `retry` (1 for the first), at most a minute.
    pub fn delay_before(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.backoff
            .saturating_mul(1u32 << doublings)
            .min(Duration::from_secs(60))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::NEVER
    }
}

/// What happens to a worker after one of its calls timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTimeout {
    /// Kill it: a plugin call cannot be cancelled inside the worker, and a hung one
    /// may hold memory (GPU memory above all) for good. The restart policy decides
    /// whether it comes back. Other calls in flight on it fail too.
    #[default]
    KillWorker,
    /// Only end the caller's wait; the plugin's call runs on in the worker.
    LeaveRunning,
}

/// Bringing a dead worker back. The restart happens on the next execution that finds
/// the worker dead: that call waits the backoff, the worker is started again with
/// the configuration it last accepted, and the call goes on. Restarts are counted
/// from the last load or reload; past `max_restarts` executions fail with
/// [`ManagerError::NotRunning`](crate::ManagerError::NotRunning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestartPolicy {
    /// 0: never restart.
    pub max_restarts: u32,
    /// Wait before the first restart; doubled for each further one.
    pub backoff: Duration,
    /// The longest wait before a restart.
    pub max_backoff: Duration,
}

impl RestartPolicy {
    /// No restarts (the default): a dead plugin stays dead until reloaded.
    pub const NEVER: RestartPolicy = RestartPolicy {
        max_restarts: 0,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(30),
    };

    /// Up to `max_restarts` restarts, the first after `backoff`.
    pub fn up_to(max_restarts: u32, backoff: Duration) -> Self {
        RestartPolicy {
            max_restarts,
            backoff,
            ..RestartPolicy::NEVER
        }
    }

    /// This policy with waits capped at `max_backoff`.
    pub fn with_max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// The wait before restart number `restart` (1 for the first).
    pub fn delay_before(&self, restart: u32) -> Duration {
        let doublings = restart.saturating_sub(1).min(31);
        self.backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::NEVER
    }
}

/// Whether a loaded plugin's worker is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PluginState {
    /// The worker runs and takes executions.
    Running,
    /// Being replaced (reload, restart); executions wait for it.
    Restarting,
    /// Stopped while idle (to free GPU memory for another plugin); the next execution
    /// starts it again with its configuration. [`PluginStatus::last_failure`] says why.
    Stopped,
    /// The worker exited, was killed, or could not be started; see
    /// [`PluginStatus::last_failure`]. The restart policy decides whether an
    /// execution brings it back.
    Dead,
}

/// A loaded plugin's worker, as [`PluginManager::plugin_status`] reports it.
///
/// [`PluginManager::plugin_status`]: crate::PluginManager::plugin_status
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginStatus {
    /// Up, restarting, stopped or dead.
    pub state: PluginState,
    /// Process id of the current (or last, if dead) worker; `None` when there is no
    /// worker (stopped, restarting, or its start failed).
    pub pid: Option<u32>,
    /// Restarts by the restart policy since the plugin was loaded or reloaded.
    pub restarts: u32,
    /// Why the worker is dead or stopped, such as "was killed by signal 9".
    pub last_failure: Option<String>,
    /// How long the worker may stay idle before it is stopped; `None`: forever.
    pub keep_alive: Option<std::time::Duration>,
    /// When the running worker will be stopped if nothing runs on it before; `None`
    /// when it has no keep-alive or is not running (not resident).
    pub idle_stop_at: Option<std::time::SystemTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let policy = RestartPolicy::up_to(10, Duration::from_millis(100))
            .with_max_backoff(Duration::from_millis(500));
        let delays: Vec<u128> = (1..=5)
            .map(|n| policy.delay_before(n).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(policy.delay_before(u32::MAX), Duration::from_millis(500));
    }
}
