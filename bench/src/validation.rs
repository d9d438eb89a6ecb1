//! `validate_config_us`: a small configuration checked against a schema compiled
//! once, as the worker and the manager do on every (re)configuration.

use std::time::Instant;

use anyhow::{bail, Result};
use cjm_validation::ConfigValidator;
use serde_json::json;

use crate::report::Results;
use crate::Options;

pub fn measure(options: &Options, results: &mut Results) -> Result<()> {
    // The same three constraints as the original's figure (bench_original.py).
    let schema = json!({
        "type": "object",
        "properties": {
            "model": {"type": "string", "maxLength": 32, "default": "tiny"},
            "repeat": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1},
            "temperature": {"type": "number", "minimum": 0.0, "maximum": 2.0, "default": 0.5}
        }
    });
    let validator = ConfigValidator::new(&schema)?;
    let config = json!({"model": "tiny", "repeat": 1, "temperature": 0.5});
    let rounds = if options.quick { 10_000 } else { 200_000 };
    let start = Instant::now();
    for _ in 0..rounds {
        if validator.validate(std::hint::black_box(&config)).is_err() {
            bail!("a valid configuration was refused");
        }
    }
    let per_call_us = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    results.insert("validate_config_us", per_call_us, "us");
    Ok(())
}
