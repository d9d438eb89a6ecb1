//! `cjm-ctl list --health`: each plugin's worker started once, what its `/health`
//! says of the Python it runs (the successor's worker, cjm-substrate, names its
//! release and interpreter), and the worker stopped again.

use cjm_manager::PluginManager;

/// What one plugin's worker said, or why it could not be asked.
#[derive(Debug, Clone, Default)]
pub(super) struct Health {
    pub(super) worker_version: Option<String>,
    pub(super) substrate_version: Option<String>,
    pub(super) python_executable: Option<String>,
    pub(super) error: Option<String>,
}

impl Health {
    /// The SUBSTRATE cell: the release, `-` for another worker, or the failure.
    pub(super) fn substrate_cell(&self) -> String {
        match (&self.error, &self.substrate_version) {
            (Some(error), _) => format!("not started: {error}"),
            (None, Some(version)) => version.clone(),
            (None, None) => String::from("-"),
        }
    }

    /// The PYTHON cell.
    pub(super) fn python_cell(&self) -> String {
        self.python_executable
            .clone()
            .unwrap_or_else(|| String::from("-"))
    }
}

/// Start each of `names` in turn on `manager`, ask, stop; one at a time, so that
/// the machine never holds more than one of them.
pub(super) fn probe(manager: &PluginManager, names: &[String]) -> anyhow::Result<Vec<Health>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(names
        .iter()
        .map(|name| {
            runtime.block_on(async {
                if let Err(err) = manager.load_plugin(name, None).await {
                    return Health {
                        error: Some(format!("{:#}", anyhow::Error::from(err))),
                        ..Health::default()
                    };
                }
                let health = match manager.worker_info(name) {
                    Some(info) => Health {
                        worker_version: Some(info.version),
                        substrate_version: info.substrate_version,
                        python_executable: info.python_executable,
                        error: None,
                    },
                    None => Health {
                        error: Some(String::from("its worker stopped at once")),
                        ..Health::default()
                    },
                };
                if let Err(err) = manager.unload_plugin(name).await {
                    tracing::warn!("{name}: {err}");
                }
                health
            })
        })
        .collect())
}
