//! The README's code is real: each block marked `<!-- file: PATH -->` is that file of
//! the repository (up to its tests), and the hosting example runs against the example
//! plugins and prints what the README says it prints. The other Rust blocks are
//! compiled and run as doc tests (`tests/src/lib.rs`).

use std::process::Command;

use crate::common::*;

fn readme() -> String {
    std::fs::read_to_string(crate::python_env::workspace_root().join("README.md")).unwrap()
}

/// `(path, code)` of every block marked with the file it shows.
fn file_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("<!-- file: ") {
        rest = &rest[at + "<!-- file: ".len()..];
        let (path, after) = rest.split_once(" -->").unwrap();
        let after = after.trim_start_matches('\n');
        assert!(
            after.starts_with("```"),
            "no code block after the {path} marker"
        );
        let code_start = after.find('\n').unwrap() + 1;
        let code_end = after[code_start..].find("\n```").unwrap() + code_start + 1;
        blocks.push((path.to_owned(), after[code_start..code_end].to_owned()));
        rest = &after[code_end..];
    }
    blocks
}

#[test]
fn every_file_the_readme_shows_is_the_file_in_the_repository() {
    let blocks = file_blocks(&readme());
    let shown: Vec<&str> = blocks.iter().map(|(path, _)| path.as_str()).collect();
    for expected in [
        "plugins/cjm-greeter/src/lib.rs",
        "plugins/cjm-greeter/src/main.rs",
        "tests/src/bin/readme_host.rs",
    ] {
        assert!(
            shown.contains(&expected),
            "the README no longer shows {expected}"
        );
    }
    for (path, code) in blocks {
        let file =
            std::fs::read_to_string(crate::python_env::workspace_root().join(&path)).unwrap();
        // The file's own tests are not shown.
        let file = match file.find("#[cfg(test)]") {
            Some(tests) => format!("{}\n", file[..tests].trim_end()),
            None => file,
        };
        assert_eq!(
            code, file,
            "the README's copy of {path} differs from the file"
        );
    }
}

#[test]
fn the_hosting_example_runs_as_the_readme_says() {
    let home = TestHome::new();
    home.installed_manifest("cjm-greeter", GREETER, &[]);
    home.installed_manifest("cjm-wordcount", WORDCOUNT, &[]);
    let output = Command::new(README_HOST)
        .env("CJM_HOME", home.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            r#"{"text":"hello, world"}"#,
            r#"{"n":0,"text":"HELLO, Ada"}"#,
            r#"{"n":1,"text":"HELLO, Ada"}"#,
            "3",
        ]
    );
}
