//! Kept configuration (the original's `plugin_configs.db`, in our form): for each
//! plugin or instance, the configuration it last had, the fingerprint of the config
//! schema it was checked against, and whether it is enabled.

use std::collections::HashSet;
use std::path::Path;

use cjm_interface::ConfigMap;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use super::db::now;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kept_configs (
    name TEXT PRIMARY KEY,
    config TEXT,
    schema_fingerprint TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    updated_at REAL NOT NULL
);
";

/// What the host keeps of one plugin or instance.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KeptConfig {
    /// The configuration it last had; `None` when only its enabled flag was set.
    pub config: Option<ConfigMap>,
    /// The fingerprint ([`schema_fingerprint`](cjm_validation::schema_fingerprint))
    /// of the config schema `config` was checked against; `None` when unknown (one
    /// imported from the original's host).
    pub schema_fingerprint: Option<String>,
    /// Whether it takes calls.
    pub enabled: bool,
    /// Seconds since the Unix epoch of the last change.
    pub updated_at: f64,
}

pub(crate) fn disabled(connection: &mut Connection) -> rusqlite::Result<HashSet<String>> {
    let mut statement = connection.prepare("SELECT name FROM kept_configs WHERE enabled = 0")?;
    let names = statement.query_map([], |row| row.get::<_, String>(0))?;
    names.collect()
}

pub(crate) fn get(connection: &mut Connection, name: &str) -> rusqlite::Result<Option<KeptConfig>> {
    connection
        .query_row(
            "SELECT config, schema_fingerprint, enabled, updated_at FROM kept_configs WHERE name = ?1",
            params![name],
            |row| {
                let config: Option<String> = row.get(0)?;
                Ok(KeptConfig {
                    config: config.and_then(|text| parse_config(name, &text)),
                    schema_fingerprint: row.get(1)?,
                    enabled: row.get::<_, i64>(2)? != 0,
                    updated_at: row.get(3)?,
                })
            },
        )
        .optional()
}

/// A kept configuration that is not a JSON object is reported and ignored: the
/// plugin starts on its defaults rather than on something no schema checked.
fn parse_config(name: &str, text: &str) -> Option<ConfigMap> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(config)) => Some(config),
        Ok(other) => {
            tracing::warn!("kept configuration of {name} is not an object ({other}); ignored");
            None
        }
        Err(err) => {
            tracing::warn!("kept configuration of {name} is not JSON ({err}); ignored");
            None
        }
    }
}

pub(crate) fn save_config(
    connection: &mut Connection,
    name: &str,
    config: &ConfigMap,
    schema_fingerprint: &str,
) -> rusqlite::Result<()> {
    let text = Value::Object(config.clone()).to_string();
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    transaction.execute(
        "INSERT INTO kept_configs (name, config, schema_fingerprint, enabled, updated_at)
         VALUES (?1, ?2, ?3, 1, ?4)
         ON CONFLICT (name) DO UPDATE SET config = excluded.config,
             schema_fingerprint = excluded.schema_fingerprint, updated_at = excluded.updated_at",
        params![name, text, schema_fingerprint, now()],
    )?;
    transaction.commit()
}

pub(crate) fn save_enabled(
    connection: &mut Connection,
    name: &str,
    enabled: bool,
) -> rusqlite::Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    transaction.execute(
        "INSERT INTO kept_configs (name, enabled, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled,
             updated_at = excluded.updated_at",
        params![name, i64::from(enabled), now()],
    )?;
    transaction.commit()
}

/// Copy the rows of the original's `plugin_configs.db` (table `plugin_configs`:
/// `plugin_name`, `config_json`, `enabled`, `updated_at`) that have no row here yet,
/// with no schema fingerprint: each is checked against its worker's live schema
/// before first use. Returns how many were copied.
pub(crate) fn import_original(
    connection: &mut Connection,
    original: &Path,
) -> rusqlite::Result<usize> {
    let source = Connection::open_with_flags(original, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let rows: Vec<(String, String, i64, f64)> = {
        let mut statement = source
            .prepare("SELECT plugin_name, config_json, enabled, updated_at FROM plugin_configs")?;
        let rows = statement.query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut copied = 0;
    for (name, config, enabled, updated_at) in rows {
        // Only objects are configurations; anything else is left behind.
        let config = match serde_json::from_str::<Value>(&config) {
            Ok(Value::Object(config)) => Value::Object(config).to_string(),
            _ => {
                tracing::warn!(
                    "original's kept configuration of {name} is not a JSON object; not imported"
                );
                continue;
            }
        };
        copied += transaction.execute(
            "INSERT OR IGNORE INTO kept_configs (name, config, schema_fingerprint, enabled, updated_at)
             VALUES (?1, ?2, NULL, ?3, ?4)",
            params![name, config, i64::from(enabled != 0), updated_at],
        )?;
    }
    transaction.commit()?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `plugin_configs.db` exactly as the original's `LocalPluginConfigStore`
    /// creates it.
    fn original_db(path: &Path) {
        let connection = Connection::open(path).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS plugin_configs (
                    plugin_name TEXT PRIMARY KEY,
                    config_json TEXT NOT NULL,
                    enabled INTEGER NOT NULL DEFAULT 1,
                    updated_at REAL NOT NULL
                );
                INSERT INTO plugin_configs VALUES ('whisper', '{\"model\": \"base\"}', 0, 1.5);
                INSERT INTO plugin_configs VALUES ('ours', '{\"model\": \"theirs\"}', 1, 2.5);
                INSERT INTO plugin_configs VALUES ('broken', '[1, 2]', 1, 3.5);",
            )
            .unwrap();
    }

    #[test]
    fn the_originals_kept_configurations_are_imported_without_overwriting_ours() {
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("plugin_configs.db");
        original_db(&original);
        let mut ours = Connection::open(dir.path().join("host.sqlite3")).unwrap();
        ours.execute_batch(SCHEMA).unwrap();
        let mine: ConfigMap = serde_json::from_value(serde_json::json!({"model": "mine"})).unwrap();
        save_config(&mut ours, "ours", &mine, "abc").unwrap();

        assert_eq!(import_original(&mut ours, &original).unwrap(), 1);
        let whisper = get(&mut ours, "whisper").unwrap().unwrap();
        assert_eq!(whisper.config.unwrap()["model"], "base");
        assert_eq!(whisper.schema_fingerprint, None, "checked at first load");
        assert!(!whisper.enabled);
        assert!(disabled(&mut ours).unwrap().contains("whisper"));
        let kept = get(&mut ours, "ours").unwrap().unwrap();
        assert_eq!(kept.config, Some(mine));
        assert!(get(&mut ours, "broken").unwrap().is_none());
    }
}
