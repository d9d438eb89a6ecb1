use std::fmt;
use std::time::Duration;

use cjm_metadata::ResourceRequirements;

use crate::{Bound, Impossible, StatsError, SystemStats};

/// What one execution holds while it runs, from the manifest's `resources`.
///
/// Non-exhaustive, as more resources may be accounted for: made with
/// [`Demand::of`], or [`Default`] (nothing) and its fields set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Demand {
    /// A GPU must be reported at all, even when no amount of memory is declared.
    pub requires_gpu: bool,
    /// GPU memory, in MiB. Zero unless `requires_gpu`: GPU memory only counts for
    /// plugins that use one.
    pub gpu_vram_mb: u64,
    /// System memory, in MiB.
    pub system_ram_mb: u64,
}

impl Demand {
    /// What a plugin declaring `resources` holds while it executes.
    pub fn of(resources: &ResourceRequirements) -> Self {
        Demand {
            requires_gpu: resources.requires_gpu,
            gpu_vram_mb: resources.gpu_vram_mb(),
            system_ram_mb: resources.min_system_ram_mb,
        }
    }

    /// Nothing to check or hold: admitted by every policy at once.
    pub fn is_nothing(&self) -> bool {
        !self.requires_gpu && self.gpu_vram_mb == 0 && self.system_ram_mb == 0
    }

    /// What does not fit in `stats` once `reserved` (held by admitted executions) is
    /// taken off the free figures; empty when it all fits.
    pub fn shortfalls(&self, stats: &SystemStats, reserved: Demand) -> Vec<Shortfall> {
        let mut short = Vec::new();
        if self.requires_gpu {
            short.extend(Shortfall::check(
                Resource::GpuMemory,
                self.gpu_vram_mb,
                stats.gpu_free_memory_mb,
                reserved.gpu_vram_mb,
            ));
        }
        if self.system_ram_mb > 0 {
            short.extend(Shortfall::check(
                Resource::SystemMemory,
                self.system_ram_mb,
                stats.memory_available_mb,
                reserved.system_ram_mb,
            ));
        }
        short
    }

    pub(crate) fn add(&mut self, other: Demand) {
        self.gpu_vram_mb += other.gpu_vram_mb;
        self.system_ram_mb += other.system_ram_mb;
    }

    pub(crate) fn subtract(&mut self, other: Demand) {
        self.gpu_vram_mb = self.gpu_vram_mb.saturating_sub(other.gpu_vram_mb);
        self.system_ram_mb = self.system_ram_mb.saturating_sub(other.system_ram_mb);
    }
}

/// A resource a scheduler accounts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Resource {
    /// `gpu_free_memory_mb` against `min_gpu_vram_mb`.
    GpuMemory,
    /// `memory_available_mb` against `min_system_ram_mb`.
    SystemMemory,
}

impl Resource {
    /// The telemetry key the free figure is read from.
    pub fn stats_key(self) -> &'static str {
        match self {
            Resource::GpuMemory => "gpu_free_memory_mb",
            Resource::SystemMemory => "memory_available_mb",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::GpuMemory => "GPU memory",
            Resource::SystemMemory => "system memory",
        })
    }
}

/// One resource that did not suffice.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Shortfall {
    /// The resource.
    pub resource: Resource,
    /// What the execution declared it needs, in MiB.
    pub needed_mb: u64,
    /// What the source reported free; `None` when it reported nothing.
    pub reported_free_mb: Option<f64>,
    /// Held by executions admitted earlier and still running.
    pub reserved_mb: u64,
    /// Set when it can never be had (then `reported_free_mb` is the most there can
    /// be): what bounds it.
    pub bound: Option<Bound>,
}

impl Shortfall {
    fn check(
        resource: Resource,
        needed_mb: u64,
        reported_free_mb: Option<f64>,
        reserved_mb: u64,
    ) -> Option<Shortfall> {
        let fits = reported_free_mb
            .is_some_and(|reported| reported - reserved_mb as f64 >= needed_mb as f64);
        (!fits).then_some(Shortfall {
            resource,
            needed_mb,
            reported_free_mb,
            reserved_mb,
            bound: None,
        })
    }

    /// More than there can ever be, as a shortfall of a refusal.
    fn impossible(impossible: Impossible) -> Shortfall {
        Shortfall {
            resource: impossible.resource,
            needed_mb: impossible.needed_mb,
            reported_free_mb: Some(impossible.available_mb),
            reserved_mb: 0,
            bound: Some(impossible.bound),
        }
    }

    /// Free for a new execution: reported free less what is reserved.
    pub fn free_mb(&self) -> Option<f64> {
        self.reported_free_mb
            .map(|reported| (reported - self.reserved_mb as f64).max(0.0))
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (resource, needed) = (self.resource, self.needed_mb);
        if let (Some(bound), Some(available)) = (self.bound, self.reported_free_mb) {
            return write!(
                f,
                "never admissible: {}",
                Impossible {
                    resource,
                    needed_mb: needed,
                    available_mb: available,
                    bound,
                }
            );
        }
        match (self.reported_free_mb, self.free_mb()) {
            (Some(reported), Some(free)) if self.reserved_mb > 0 => write!(
                f,
                "{resource} needed {needed} MB, free {free:.0} MB ({reported:.0} MB reported \
                 free, {} MB reserved by running executions)",
                self.reserved_mb
            ),
            (_, Some(free)) => write!(f, "{resource} needed {needed} MB, free {free:.0} MB"),
            _ => write!(
                f,
                "{resource} needed {needed} MB, free unknown (no {} reported)",
                self.resource.stats_key()
            ),
        }
    }
}

/// Why an execution was not admitted: what was needed and what was free.
///
/// Its message says every reason, the statistics' failure included, so it has no
/// [`source`](std::error::Error::source).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("execution of {plugin} not admitted: {}", self.reasons())]
#[non_exhaustive]
pub struct Refusal {
    /// The plugin whose execution was refused.
    pub plugin: String,
    /// Each resource that did not suffice; empty when the refusal had another cause.
    pub shortfalls: Vec<Shortfall>,
    /// The statistics could not be read (and so nothing could be checked).
    pub stats_error: Option<StatsError>,
    /// Requests that were still ahead in the queue when the wait ended.
    pub queued_ahead: usize,
    /// How long the execution waited before it was refused, for waiting policies.
    pub waited: Option<Duration>,
}

impl Refusal {
    /// `plugin` was refused for `shortfalls` (empty: for no resource in
    /// particular). Policies that wait set [`queued_ahead`](Self::queued_ahead) and
    /// [`waited`](Self::waited) afterwards.
    pub fn new(plugin: impl Into<String>, shortfalls: Vec<Shortfall>) -> Self {
        Refusal {
            plugin: plugin.into(),
            shortfalls,
            stats_error: None,
            queued_ahead: 0,
            waited: None,
        }
    }

    /// `plugin` was refused because the statistics could not be read, so nothing
    /// could be checked.
    pub fn stats_unavailable(plugin: impl Into<String>, error: StatsError) -> Self {
        Refusal {
            stats_error: Some(error),
            ..Refusal::new(plugin, Vec::new())
        }
    }

    /// `plugin` can never be admitted: it needs more than there can be of each of
    /// `never` (see [`never_admissible`](crate::never_admissible)).
    pub fn never_admissible(plugin: impl Into<String>, never: Vec<Impossible>) -> Self {
        let shortfalls = never.into_iter().map(Shortfall::impossible).collect();
        Refusal::new(plugin, shortfalls)
    }

    /// Whether it can never be admitted, however long it waits.
    pub fn is_never_admissible(&self) -> bool {
        self.shortfalls
            .iter()
            .any(|shortfall| shortfall.bound.is_some())
    }

    /// Whether `resource` was one of the reasons, as memory in use now (waiting or
    /// eviction may help).
    pub fn is_short_of(&self, resource: Resource) -> bool {
        self.shortfalls
            .iter()
            .any(|shortfall| shortfall.resource == resource && shortfall.bound.is_none())
    }
}

impl Refusal {
    /// The reasons, `; ` between them, and how long it waited.
    fn reasons(&self) -> String {
        let mut reasons: Vec<String> = self.shortfalls.iter().map(ToString::to_string).collect();
        if let Some(error) = &self.stats_error {
            reasons.push(error.to_string());
        }
        if self.queued_ahead > 0 {
            reasons.push(format!(
                "{} earlier request(s) still waiting ahead of it",
                self.queued_ahead
            ));
        }
        if reasons.is_empty() {
            reasons.push(String::from("the scheduler refused it"));
        }
        let mut text = reasons.join("; ");
        if let Some(waited) = self.waited {
            text.push_str(&format!(" (after waiting {:.1} s)", waited.as_secs_f64()));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(needed: u64) -> Demand {
        Demand {
            requires_gpu: true,
            gpu_vram_mb: needed,
            system_ram_mb: 0,
        }
    }

    #[test]
    fn gpu_memory_counts_only_for_gpu_plugins() {
        // GPU memory declared, but no GPU required.
        let mut resources = ResourceRequirements::default().with_system_ram_mb(100);
        resources.min_gpu_vram_mb = 8000;
        let demand = Demand::of(&resources);
        assert_eq!(demand.gpu_vram_mb, 0);
        let stats = SystemStats {
            memory_available_mb: Some(100.0),
            ..SystemStats::default()
        };
        assert!(demand.shortfalls(&stats, Demand::default()).is_empty());
        assert!(Demand::default().is_nothing());
    }

    #[test]
    fn reserved_memory_is_not_free() {
        let stats = SystemStats {
            gpu_free_memory_mb: Some(8000.0),
            ..SystemStats::default()
        };
        assert!(gpu(6000).shortfalls(&stats, Demand::default()).is_empty());
        let short = gpu(6000).shortfalls(&stats, gpu(6000));
        assert_eq!(short.len(), 1);
        assert_eq!(short[0].free_mb(), Some(2000.0));
        let text = short[0].to_string();
        assert!(text.contains("needed 6000 MB, free 2000 MB"), "{text}");
        assert!(text.contains("6000 MB reserved"), "{text}");
    }

    #[test]
    fn a_missing_figure_is_a_shortfall_that_says_so() {
        let short = gpu(0).shortfalls(&SystemStats::default(), Demand::default());
        assert_eq!(short.len(), 1);
        let refusal = Refusal::new("whisper", short);
        assert!(refusal.is_short_of(Resource::GpuMemory));
        assert!(!refusal.is_short_of(Resource::SystemMemory));
        let text = refusal.to_string();
        assert!(
            text.starts_with("execution of whisper not admitted"),
            "{text}"
        );
        assert!(text.contains("no gpu_free_memory_mb reported"), "{text}");
    }

    /// Every clause of the chain once: no cause is both named and returned.
    fn assert_said_once(err: &(dyn std::error::Error + 'static)) -> String {
        let chain = cjm_interface::ErrorChain(err);
        assert_eq!(chain.repeated_clause(), None, "in {chain}");
        chain.to_string()
    }

    #[test]
    fn every_cause_is_said_once() {
        let stats_error = StatsError::new("local monitor", "no /proc");
        assert_eq!(
            assert_said_once(&stats_error),
            "system statistics from local monitor unavailable: no /proc"
        );
        let mut unavailable = Refusal::stats_unavailable("whisper", stats_error);
        unavailable.waited = Some(Duration::from_millis(1500));
        assert_eq!(
            assert_said_once(&unavailable),
            "execution of whisper not admitted: system statistics from local monitor \
             unavailable: no /proc (after waiting 1.5 s)"
        );
        let stats = SystemStats {
            gpu_free_memory_mb: Some(1000.0),
            memory_available_mb: Some(10.0),
            ..SystemStats::default()
        };
        let demand = Demand {
            system_ram_mb: 100,
            ..gpu(6000)
        };
        let mut short = Refusal::new("llm", demand.shortfalls(&stats, Demand::default()));
        short.queued_ahead = 2;
        assert_eq!(
            assert_said_once(&short),
            "execution of llm not admitted: GPU memory needed 6000 MB, free 1000 MB; \
             system memory needed 100 MB, free 10 MB; 2 earlier request(s) still waiting \
             ahead of it"
        );
    }
}
