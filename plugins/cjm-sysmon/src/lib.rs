//! `cjm-sysmon`: a system monitor plugin. Registered with
//! `PluginManager::register_system_monitor`, it is where the scheduler's figures come
//! from: `execute("get_system_status")` (or the original's keyword form,
//! `command="get_system_status"`) answers with the same keys as the host's built-in
//! local monitor (`memory_available_mb`, `gpu_free_memory_mb`, ...).

use cjm_interface::{Call, ConfigMap, Plugin, PluginError};
use cjm_metadata::ResourceRequirements;
use cjm_scheduling::LocalMonitor;
use cjm_worker::About;
use serde_json::Value;

pub const NAME: &str = "cjm-sysmon";
pub const GET_SYSTEM_STATUS: &str = "get_system_status";

pub fn about() -> About {
    About::new()
        .description("System monitor: memory, CPU and NVIDIA GPU figures for scheduling")
        .package_name(env!("CARGO_PKG_NAME"))
        .category("system_monitor")
        .resources(ResourceRequirements::default())
}

#[derive(Debug)]
pub struct SysmonPlugin {
    monitor: LocalMonitor,
}

impl SysmonPlugin {
    fn figures(&self) -> Result<Value, PluginError> {
        serde_json::to_value(self.monitor.snapshot())
            .map_err(|err| PluginError::failed(format!("cannot encode the figures: {err}")))
    }

    pub fn new() -> Result<Self, PluginError> {
        let monitor = LocalMonitor::new().map_err(|err| PluginError::failed(err.to_string()))?;
        // The first reading only primes the CPU figure (load is measured between two).
        monitor.snapshot();
        Ok(SysmonPlugin { monitor })
    }
}

impl Plugin for SysmonPlugin {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn initialize(&mut self, config: ConfigMap) -> Result<(), PluginError> {
        match config.keys().next() {
            Some(unknown) => Err(PluginError::invalid_config(format!(
                "unknown configuration key '{unknown}'; this plugin takes none"
            ))),
            None => Ok(()),
        }
    }

    fn execute(&self, call: Call) -> Result<Value, PluginError> {
        call.reject_unknown_kwargs(&["command"])?;
        let command: String = call.or(0, "command", GET_SYSTEM_STATUS.to_owned())?;
        if command != GET_SYSTEM_STATUS {
            return Err(PluginError::invalid_argument(format!(
                "unknown command '{command}'; known: ['{GET_SYSTEM_STATUS}']"
            )));
        }
        self.figures()
    }

    fn config_schema(&self) -> Value {
        serde_json::json!({
            "name": NAME,
            "title": "System monitor configuration",
            "type": "object",
            "properties": {}
        })
    }

    fn current_config(&self) -> Value {
        serde_json::json!({})
    }

    fn system_status(&self) -> Option<Result<Value, PluginError>> {
        Some(self.figures())
    }

    fn list_processes(&self) -> Option<Result<Value, PluginError>> {
        Some(
            serde_json::to_value(self.monitor.gpu_processes())
                .map_err(|err| PluginError::failed(format!("cannot encode the processes: {err}"))),
        )
    }
}

/// The plugin binary's whole `main`, a library function so that test harnesses can
/// link the same worker into binaries of their own.
pub fn main() -> std::process::ExitCode {
    cjm_worker::main(about(), |_plugin_args| SysmonPlugin::new())
}

#[cfg(test)]
mod tests {
    use cjm_interface::ErrorKind;
    use serde_json::json;

    use super::*;

    #[test]
    fn its_empty_configuration_satisfies_its_schema() {
        let plugin = SysmonPlugin::new().unwrap();
        let validator =
            cjm_worker::cjm_validation::ConfigValidator::new(&plugin.config_schema()).unwrap();
        validator.validate(&plugin.current_config()).unwrap();
    }

    fn call(body: Value) -> Call {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn answers_get_system_status_in_both_forms() {
        let plugin = SysmonPlugin::new().unwrap();
        for body in [
            json!({"args": ["get_system_status"]}),
            json!({"kwargs": {"command": "get_system_status"}}),
            json!({}),
        ] {
            let status = plugin.execute(call(body.clone())).unwrap();
            assert!(
                status["memory_available_mb"].as_f64().unwrap() > 0.0,
                "{body}: {status}"
            );
            assert!(status["memory_total_mb"].as_f64().is_some(), "{status}");
        }
    }

    #[test]
    fn unknown_commands_and_config_are_refused() {
        let mut plugin = SysmonPlugin::new().unwrap();
        let err = plugin
            .execute(call(json!({"args": ["reboot"]})))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains("reboot"), "{err}");
        let mut config = ConfigMap::new();
        config.insert("interval".into(), json!(1));
        let err = plugin.initialize(config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    }
}
