//! End-to-end tests: a manager in this process, plugins in real worker processes,
//! HTTP over loopback, a temporary CJM_HOME. Run with `cargo xtask e2e` or as part of
//! `cargo test --workspace`.

// Test helpers may panic: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod common;
mod completions;
mod compositions;
mod config;
mod ctl;
mod daemon;
mod daemon_api;
mod daemon_auth;
mod daemon_cli;
mod daemon_dashboard;
mod daemon_soak;
mod daemon_tcp;
mod diagnostics;
mod early_cancel;
mod errors;
mod exec_cli;
mod faults;
mod fuzz;
mod idle;
mod install;
mod instances;
mod jobs;
mod lifecycle;
mod new;
mod protocol;
mod pypi;
mod pypi_capability;
mod pypi_graph;
mod pypi_monitor;
mod python046;
mod python_env;
mod python_interop;
mod queue_verbs;
mod races;
mod readme;
mod recovery;
mod relay;
mod scenario;
mod scheduling;
mod serving;
mod stores;
mod substrate;
mod substrate_rules;
mod substrate_scheduler;
mod substrate_worker;
mod tasks;
mod tasks046;
mod worker_env;
