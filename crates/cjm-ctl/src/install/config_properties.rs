//! plugins.yaml parsing under arbitrary input: never a panic, every problem named.

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;

use super::config::PluginsFile;

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_.-]{0,10}",
        Just(String::from("\"\"")),
        Just(String::from("null")),
        Just(String::from("[]")),
        Just(String::from("{}")),
        Just(String::from("\"../../etc\"")),
        "-?[0-9]{1,4}",
        "[ -~]{0,16}",
    ]
}

/// One entry: a random subset of the real keys (and some unknown), nested ones
/// given plausible or implausible shapes.
fn entry() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "name",
        "env_name",
        "bin",
        "executable",
        "python_version",
        "env_file",
        "package",
        "interface_libs",
        "unknown_key",
    ]);
    let cargo = prop_oneof![
        scalar().prop_map(|value| format!("cargo: {value}")),
        (
            prop::sample::select(vec![
                "path", "git", "crate", "rev", "branch", "tag", "version"
            ]),
            scalar()
        )
            .prop_map(|(key, value)| format!("cargo: {{{key}: {value}}}")),
        Just(String::from("cargo: {path: a, git: b}")),
    ];
    (vec((key, scalar()), 0..6), prop::option::of(cargo)).prop_map(|(pairs, cargo)| {
        let mut lines: Vec<String> = pairs
            .into_iter()
            .map(|(key, value)| format!("{key}: {value}"))
            .collect();
        lines.extend(cargo);
        if lines.is_empty() {
            return String::from("  - {}\n");
        }
        let mut text = format!("  - {}\n", lines[0]);
        for line in &lines[1..] {
            text.push_str(&format!("    {line}\n"));
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,300}") {
        if let Err(problems) = PluginsFile::parse(&text, Path::new("/base")) {
            prop_assert!(!problems.is_empty());
            for problem in problems {
                prop_assert!(!problem.to_string().is_empty());
            }
        }
    }

    #[test]
    fn entries_of_every_shape_are_accepted_or_each_problem_is_named(entries in vec(entry(), 0..5)) {
        let text = format!("plugins:\n{}", entries.concat());
        match PluginsFile::parse(&text, Path::new("/base")) {
            Ok(parsed) => prop_assert!(parsed.len() <= entries.len()),
            Err(problems) => {
                prop_assert!(!problems.is_empty());
                for problem in problems {
                    prop_assert!(!problem.message.is_empty(), "{:?}", problem);
                }
            }
        }
    }
}
