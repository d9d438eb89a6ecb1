//! Whether a loaded plugin takes calls (enable, disable, each told to its worker),
//! and prefetch: a plugin acquires ahead of its calls what they will need (downloads
//! a model, warms a cache), and the host watches that it keeps moving.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cjm_proxy::{HookOutcome, ProxyError};
use tokio::time::Instant;

use super::events::PluginChange;
use super::for_jobs::ProgressFeed;
use super::PluginManager;
use crate::ManagerError;

/// A poll of a worker that cannot push its progress (the original's) comes at least
/// this often.
const MAX_POLL: Duration = Duration::from_millis(250);

/// # Readiness
///
/// Whether a loaded plugin takes calls (disabled, it refuses calls and loads, its
/// worker left running and told), and having it acquire ahead of its calls what they
/// will need.
impl PluginManager {
    /// Allow executions again, and tell a running worker (its plugin's `on_enable`
    /// hook, where it has one). Whether the plugin is known (discovered or loaded).
    /// Kept across restarts with [`keep_configs`](crate::ManagerOptions::keep_configs).
    pub async fn enable_plugin(&self, name: &str) -> bool {
        let known = self.set_enabled(name, true);
        if known {
            self.kept_written().await;
            self.tell_worker(name, true).await;
        }
        known
    }

    /// Refuse executions (and loads) without stopping the worker, and tell a running
    /// worker (its plugin's `on_disable` hook, which runs once the calls in flight
    /// have ended and may release heavy resources). Whether the plugin is known.
    /// Kept across restarts with [`keep_configs`](crate::ManagerOptions::keep_configs).
    pub async fn disable_plugin(&self, name: &str) -> bool {
        let known = self.set_enabled(name, false);
        if known {
            self.kept_written().await;
            self.tell_worker(name, false).await;
        }
        known
    }

    /// Have the plugin acquire what its calls will need (its `prefetch` hook). It
    /// must report progress, and a prefetch whose progress (fraction and message)
    /// has not changed for `stall_after` counts as failed: its worker is killed and
    /// started again, and the error says so (the original's stall rule). A worker or
    /// plugin without the hook is no error. Returns whether a prefetch ran.
    pub async fn prefetch_plugin(
        &self,
        name: &str,
        stall_after: Duration,
    ) -> Result<bool, ManagerError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let proxy = self.running_worker(name).await?;
        let feed = ProgressFeed::of(&self.loaded(name)?.manifest);
        let call_id = format!(
            "prefetch-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let prefetch = proxy.prefetch(&call_id);
        tokio::pin!(prefetch);
        let mut last = None;
        let mut changed_at = Instant::now();
        let mut after = 0u64;
        loop {
            let wait = stall_after.saturating_sub(changed_at.elapsed());
            let look = async {
                match feed {
                    ProgressFeed::Push => {
                        proxy
                            .progress(Some(&call_id), Some(after), Some(wait))
                            .await
                    }
                    ProgressFeed::Poll => {
                        tokio::time::sleep(wait.min(MAX_POLL)).await;
                        proxy.progress(None, None, None).await
                    }
                }
            };
            tokio::select! {
                outcome = &mut prefetch => {
                    return match outcome? {
                        HookOutcome::NotSupported => Ok(false),
                        HookOutcome::Done => Ok(true),
                        HookOutcome::Failed(why) => Err(ManagerError::PrefetchFailed {
                            name: name.to_owned(),
                            reason: why,
                        }),
                    };
                }
                progress = look => match progress {
                    Ok(progress) => {
                        after = progress.seq.unwrap_or(after);
                        let now = (progress.progress.to_bits(), progress.message, progress.seq);
                        if last.as_ref() != Some(&now) {
                            last = Some(now);
                            changed_at = Instant::now();
                        }
                    }
                    // No /progress (0.0.20): nothing to watch but the clock.
                    Err(ProxyError::Http { status: 404, .. }) => {
                        tokio::time::sleep(wait.min(MAX_POLL)).await;
                    }
                    Err(err) => return Err(err.into()),
                },
            }
            if changed_at.elapsed() >= stall_after {
                self.force_restart(name, &format!("its prefetch stalled for {stall_after:?}"))
                    .await?;
                return Err(ManagerError::PrefetchStalled {
                    name: name.to_owned(),
                    after: stall_after,
                });
            }
        }
    }
}

impl PluginManager {
    /// A worker without the hook (the original 0.0.20) is fine; a failing hook is
    /// logged, the plugin's state is what the caller asked for either way.
    async fn tell_worker(&self, name: &str, enabled: bool) {
        let Some(proxy) = self
            .loaded(name)
            .ok()
            .and_then(|plugin| plugin.proxy())
            .filter(|proxy| proxy.is_running())
        else {
            return;
        };
        let told = if enabled {
            proxy.on_enable().await
        } else {
            proxy.on_disable().await
        };
        match told {
            Ok(cjm_proxy::HookOutcome::Failed(why)) => {
                tracing::warn!("plugin {name}: its enable/disable hook failed: {why}");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!("{err}"),
        }
    }

    fn set_enabled(&self, name: &str, enabled: bool) -> bool {
        let known = self.is_loaded(name) || self.discovered_plugin(name).is_some();
        if !known {
            return false;
        }
        let mut disabled = self.shared.disabled.lock();
        if enabled {
            disabled.remove(name);
        } else {
            disabled.insert(name.to_owned());
        }
        // Under the same lock: the kept flag follows the calls in their order, and so
        // do the listeners.
        self.keep_enabled(name, enabled);
        let change = match enabled {
            true => PluginChange::Enabled,
            false => PluginChange::Disabled,
        };
        self.announce(name, change, None, None);
        true
    }
}
