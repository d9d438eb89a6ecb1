//! Learned resource profiles (the original's `empirical_resources.db`, in our form):
//! per (plugin or instance, configuration fingerprint), what its calls were seen to
//! use, as running aggregates. No raw samples are kept: one row per key.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::db::now;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resource_profiles (
    plugin TEXT NOT NULL,
    config_fingerprint TEXT NOT NULL,
    calls INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    duration_count INTEGER NOT NULL, duration_mean REAL NOT NULL,
    duration_max REAL NOT NULL, duration_last REAL NOT NULL,
    rss_count INTEGER NOT NULL, rss_mean REAL NOT NULL,
    rss_max REAL NOT NULL, rss_last REAL NOT NULL,
    gpu_count INTEGER NOT NULL, gpu_mean REAL NOT NULL,
    gpu_max REAL NOT NULL, gpu_last REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (plugin, config_fingerprint)
);
";

/// Count, mean, largest and last of one measure over the calls that measured it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Aggregate {
    /// Calls that measured it.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// The largest seen.
    pub max: f64,
    /// The latest.
    pub last: f64,
}

impl Aggregate {
    /// Fold one measurement in (a running mean: no samples kept).
    pub(crate) fn fold(&mut self, value: f64) {
        self.count += 1;
        self.mean += (value - self.mean) / self.count as f64;
        self.max = if self.count == 1 {
            value
        } else {
            self.max.max(value)
        };
        self.last = value;
    }
}

/// What the calls of one plugin or instance, on one configuration, were seen to use.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ResourceProfile {
    /// The plugin or instance.
    pub plugin: String,
    /// The fingerprint of the configuration the calls ran with (the
    /// [`schema_fingerprint`](cjm_validation::schema_fingerprint) of the
    /// configuration object).
    pub config_fingerprint: String,
    /// Calls recorded, however they ended.
    pub calls: u64,
    /// Of those, the calls that did not return a result (an error, a timeout, a
    /// dropped or cancelled call).
    pub failures: u64,
    /// How long the calls took, in seconds (every call).
    pub duration_s: Aggregate,
    /// Peak resident memory of the worker's process tree over a call, in MiB (calls
    /// whose worker could be asked).
    pub peak_rss_mb: Aggregate,
    /// GPU memory of the worker's process tree at the call's end, in MiB (calls on
    /// this machine with a GPU driver that reported a figure).
    pub gpu_memory_mb: Aggregate,
    /// Seconds since the Unix epoch of the last call recorded.
    pub updated_at: f64,
}

impl ResourceProfile {
    pub(crate) fn empty(plugin: &str, config_fingerprint: &str) -> Self {
        ResourceProfile {
            plugin: plugin.to_owned(),
            config_fingerprint: config_fingerprint.to_owned(),
            calls: 0,
            failures: 0,
            duration_s: Aggregate::default(),
            peak_rss_mb: Aggregate::default(),
            gpu_memory_mb: Aggregate::default(),
            updated_at: 0.0,
        }
    }

    pub(crate) fn fold(&mut self, sample: &Sample) {
        self.calls += 1;
        if !sample.succeeded {
            self.failures += 1;
        }
        self.duration_s.fold(sample.duration_s);
        if let Some(rss) = sample.peak_rss_mb {
            self.peak_rss_mb.fold(rss);
        }
        if let Some(gpu) = sample.gpu_memory_mb {
            self.gpu_memory_mb.fold(gpu);
        }
        self.updated_at = sample.at;
    }
}

/// One call's measurements.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) plugin: String,
    pub(crate) config_fingerprint: String,
    pub(crate) succeeded: bool,
    pub(crate) duration_s: f64,
    pub(crate) peak_rss_mb: Option<f64>,
    pub(crate) gpu_memory_mb: Option<f64>,
    pub(crate) at: f64,
}

impl Sample {
    pub(crate) fn new(
        plugin: &str,
        config_fingerprint: &str,
        succeeded: bool,
        duration_s: f64,
    ) -> Self {
        Sample {
            plugin: plugin.to_owned(),
            config_fingerprint: config_fingerprint.to_owned(),
            succeeded,
            duration_s,
            peak_rss_mb: None,
            gpu_memory_mb: None,
            at: now(),
        }
    }
}

const COLUMNS: &str = "plugin, config_fingerprint, calls, failures,
    duration_count, duration_mean, duration_max, duration_last,
    rss_count, rss_mean, rss_max, rss_last, gpu_count, gpu_mean, gpu_max, gpu_last, updated_at";

fn aggregate(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Aggregate> {
    Ok(Aggregate {
        count: row.get::<_, i64>(first)?.max(0) as u64,
        mean: row.get(first + 1)?,
        max: row.get(first + 2)?,
        last: row.get(first + 3)?,
    })
}

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ResourceProfile> {
    Ok(ResourceProfile {
        plugin: row.get(0)?,
        config_fingerprint: row.get(1)?,
        calls: row.get::<_, i64>(2)?.max(0) as u64,
        failures: row.get::<_, i64>(3)?.max(0) as u64,
        duration_s: aggregate(row, 4)?,
        peak_rss_mb: aggregate(row, 8)?,
        gpu_memory_mb: aggregate(row, 12)?,
        updated_at: row.get(16)?,
    })
}

pub(crate) fn all(connection: &mut Connection) -> rusqlite::Result<Vec<ResourceProfile>> {
    let mut statement = connection.prepare(&format!(
        "SELECT {COLUMNS} FROM resource_profiles ORDER BY plugin, config_fingerprint"
    ))?;
    let rows = statement.query_map([], from_row)?;
    rows.collect()
}

/// Fold `samples` into their rows in one transaction (another host may fold its own
/// at the same time); the rows as they now stand, the last of each key last.
pub(crate) fn record_all(
    connection: &mut Connection,
    samples: &[Sample],
) -> rusqlite::Result<Vec<ResourceProfile>> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut merged = Vec::with_capacity(samples.len());
    for sample in samples {
        merged.push(fold_row(&transaction, sample)?);
    }
    transaction.commit()?;
    Ok(merged)
}

#[cfg(test)]
fn record(connection: &mut Connection, sample: &Sample) -> rusqlite::Result<ResourceProfile> {
    let mut merged = record_all(connection, std::slice::from_ref(sample))?;
    merged.pop().ok_or(rusqlite::Error::QueryReturnedNoRows)
}

fn fold_row(
    transaction: &rusqlite::Transaction<'_>,
    sample: &Sample,
) -> rusqlite::Result<ResourceProfile> {
    let mut profile = transaction
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM resource_profiles WHERE plugin = ?1 AND config_fingerprint = ?2"
            ),
            params![sample.plugin, sample.config_fingerprint],
            from_row,
        )
        .optional()?
        .unwrap_or_else(|| ResourceProfile::empty(&sample.plugin, &sample.config_fingerprint));
    profile.fold(sample);
    let count = |aggregate: &Aggregate| i64::try_from(aggregate.count).unwrap_or(i64::MAX);
    transaction.execute(
        &format!(
            "INSERT OR REPLACE INTO resource_profiles ({COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        ),
        params![
            profile.plugin,
            profile.config_fingerprint,
            i64::try_from(profile.calls).unwrap_or(i64::MAX),
            i64::try_from(profile.failures).unwrap_or(i64::MAX),
            count(&profile.duration_s),
            profile.duration_s.mean,
            profile.duration_s.max,
            profile.duration_s.last,
            count(&profile.peak_rss_mb),
            profile.peak_rss_mb.mean,
            profile.peak_rss_mb.max,
            profile.peak_rss_mb.last,
            count(&profile.gpu_memory_mb),
            profile.gpu_memory_mb.mean,
            profile.gpu_memory_mb.max,
            profile.gpu_memory_mb.last,
            profile.updated_at,
        ],
    )?;
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_fold_count_mean_max_and_last() {
        let mut aggregate = Aggregate::default();
        for value in [4.0, 10.0, 1.0] {
            aggregate.fold(value);
        }
        assert_eq!(aggregate.count, 3);
        assert!((aggregate.mean - 5.0).abs() < 1e-9);
        assert_eq!(aggregate.max, 10.0);
        assert_eq!(aggregate.last, 1.0);
    }

    #[test]
    fn two_connections_fold_into_one_row_without_losing_a_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.sqlite3");
        let open = || {
            let connection = Connection::open(&path).unwrap();
            connection
                .busy_timeout(std::time::Duration::from_secs(5))
                .unwrap();
            connection
                .execute_batch("PRAGMA journal_mode = WAL;")
                .and_then(|()| connection.execute_batch(SCHEMA))
                .unwrap();
            connection
        };
        let threads: Vec<_> = (0..2)
            .map(|host| {
                let mut connection = open();
                std::thread::spawn(move || {
                    for call in 0..50 {
                        let mut sample = Sample::new("p", "fp", call % 5 != 0, 0.5);
                        sample.peak_rss_mb = Some(f64::from(host * 100 + call));
                        record(&mut connection, &sample).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let profiles = all(&mut open()).unwrap();
        assert_eq!(profiles.len(), 1);
        assert_eq!(profiles[0].calls, 100);
        assert_eq!(profiles[0].failures, 20);
        assert_eq!(profiles[0].peak_rss_mb.count, 100);
        assert_eq!(profiles[0].peak_rss_mb.max, 149.0);
    }
}
