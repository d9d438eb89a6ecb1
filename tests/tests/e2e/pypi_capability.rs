//! A published capability of the successor that nobody here wrote, from PyPI, the way
//! its users get it: `cjm-capability-pysbd` 0.0.1 (cjm-substrate 0.0.74) with the
//! generic adapter of `cjm-sentence-segmentation-adapter-interface` 0.0.2, from the
//! successor's own file shape (`capabilities:`, with an `adapters:` entry) through
//! `cjm-ctl install-all` into a Python 3.12 venv. The install records the
//! capability's structural surface and registers the adapter with a manifest; our
//! host matches and binds it, and `cjm-ctl task` segments text over `/task`, the
//! typed result and a typed input error each as the successor's worker gives them;
//! a plain `exec` is refused, as a capability has no `execute`.
//! Then `list --health`, the learned profile, and `remove`, which takes the adapter
//! with it.
//!
//! Needs `python3.12` or newer (on PATH or pyenv's) and PyPI; about 20 s.

use serde_json::Value;

use crate::common::*;
use crate::pypi::{ctl, text, workers_of};

const CAPABILITY: &str = "cjm-capability-pysbd";
const ADAPTER_FILE: &str = "adapter-sentence_segmentation-GenericSentenceSegmentationAdapter.json";

#[test]
fn a_successor_capability_from_pypi_installs_with_its_adapter_and_segments_text() {
    let home = TestHome::new();
    let config = home.path().join("capabilities.yaml");
    std::fs::write(
        &config,
        format!(
            "capabilities:\n  - name: {CAPABILITY}\n    package: {CAPABILITY}==0.0.1\n    \
             interface_libs: [\"cjm-substrate==0.0.74\"]\n    adapters:\n      \
             - lib: cjm-sentence-segmentation-adapter-interface==0.0.2\n        \
             impl: cjm_sentence_segmentation_adapter_interface.generic:GenericSentenceSegmentationAdapter\n"
        ),
    )
    .unwrap();
    let install = || {
        ctl(
            &home,
            &["install-all", "--config", config.to_str().unwrap()],
        )
    };
    let installed = install();
    assert!(
        installed.status.success(),
        "{}\n{}",
        text(&installed.stderr),
        std::fs::read_to_string(home.path().join(format!("logs/install-{CAPABILITY}.log")))
            .unwrap_or_default()
    );

    // The capability, read as the successor's installer reads it, with its surface.
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(home.plugins_dir().join(format!("{CAPABILITY}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["class"], "PySBDSegmentationCapability");
    assert_eq!(manifest["cjm_substrate_version"], "0.0.74");
    let segment = manifest["structural_surface"]["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|method| method["name"] == "segment_text")
        .unwrap_or_else(|| panic!("no segment_text in {manifest}"));
    assert_eq!(segment["params"], serde_json::json!(["text", "kwargs"]));

    // The adapter, registered beside it, in the environment it was installed into.
    let adapter: Value = serde_json::from_str(
        &std::fs::read_to_string(home.plugins_dir().join(ADAPTER_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(adapter["unit"], "adapter");
    assert_eq!(adapter["task_name"], "sentence_segmentation");
    assert_eq!(adapter["conda_env"], CAPABILITY);
    assert_eq!(adapter["version"], "0.0.2");

    // Run again: nothing changed, nothing rebuilt, the adapter kept.
    let again = install();
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("unchanged"),
        "{}",
        text(&again.stdout)
    );
    assert!(home.plugins_dir().join(ADAPTER_FILE).is_file());

    let listed = ctl(&home, &["list", "--health", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let entry = &listed["plugins"][0];
    assert_eq!(entry["status"], "ok", "{listed}");
    assert_eq!(entry["health"]["substrate_version"], "0.0.74", "{listed}");

    // The adapter bound in the worker, its method over /task, its typed result.
    let sentences = "Dr. Smith arrived at 5 p.m. He sat down.";
    let kwargs = serde_json::json!({ "text": sentences }).to_string();
    let called = ctl(
        &home,
        &[
            "task",
            CAPABILITY,
            "sentence_segmentation",
            "segment_text",
            "--kwargs",
            &kwargs,
        ],
    );
    assert!(called.status.success(), "{}", text(&called.stderr));
    let result: Value = serde_json::from_slice(&called.stdout).unwrap();
    assert_eq!(
        result["__wire__"], "sentence_segmentation.result",
        "{result}"
    );
    let spans: Vec<&str> = result["data"]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|span| {
            let at = |key: &str| span[key].as_u64().unwrap() as usize;
            &sentences[at("start_char")..at("end_char")]
        })
        .collect();
    assert_eq!(spans, ["Dr. Smith arrived at 5 p.m.", "He sat down."]);

    // Its typed input error is the caller's mistake: exit 65, in its own words.
    let refused = ctl(
        &home,
        &[
            "task",
            CAPABILITY,
            "sentence_segmentation",
            "segment_text",
            "--kwargs",
            r#"{"text": 5}"#,
        ],
    );
    assert_eq!(refused.status.code(), Some(65), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("Unsupported text input type"),
        "{}",
        text(&refused.stderr)
    );
    // A method the adapter does not have is refused before anything runs.
    let unknown = ctl(
        &home,
        &["task", CAPABILITY, "sentence_segmentation", "translate"],
    );
    assert_eq!(unknown.status.code(), Some(65), "{}", text(&unknown.stderr));

    // A capability has no `execute`: a plain call is refused in its worker's words.
    let plain = ctl(&home, &["exec", CAPABILITY]);
    assert_eq!(plain.status.code(), Some(70), "{}", text(&plain.stderr));
    assert!(
        text(&plain.stderr).contains("has no attribute 'execute'"),
        "{}",
        text(&plain.stderr)
    );

    // What its calls were seen to use is learned.
    let profiles = ctl(&home, &["stats", "--profiles", "--json"]);
    let profiles: Value = serde_json::from_slice(&profiles.stdout).unwrap();
    let profile = profiles
        .as_array()
        .unwrap()
        .iter()
        .find(|profile| profile["plugin"] == CAPABILITY)
        .unwrap_or_else(|| panic!("{profiles}"));
    assert!(profile["calls"].as_u64().unwrap() >= 2, "{profile}");
    assert!(
        profile["peak_rss_mb"]["max"].as_f64().unwrap() > 0.0,
        "{profile}"
    );

    assert_eq!(workers_of(&home), Vec::<u32>::new());
    let removed = ctl(&home, &["remove", CAPABILITY]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert!(
        text(&removed.stdout).contains(ADAPTER_FILE),
        "{}",
        text(&removed.stdout)
    );
    assert!(!home.plugins_dir().join(ADAPTER_FILE).exists());
    assert!(!home
        .plugins_dir()
        .join(format!("{CAPABILITY}.json"))
        .exists());
}
