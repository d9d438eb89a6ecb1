//! `cjm-ctl completions` in the real shells: each script completes subcommands, a
//! nested command's own options (not its parent's), and the values of `completions`
//! itself. A shell that is not installed is skipped with a line saying so, except
//! under CI (`.ci/run` installs zsh and fish), where that fails.

use std::process::Command;

use crate::common::*;

fn script(shell: &str) -> std::path::PathBuf {
    let out = Command::new(CTL)
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let path = std::env::temp_dir().join(format!(
        "cjm-ctl-completions-{}-{shell}",
        std::process::id()
    ));
    std::fs::write(&path, out.stdout).unwrap();
    path
}

/// The words the shell prints for `script` (`shell -c`), each without its
/// description; `None` when the shell is not installed here (outside CI).
// The skip is said on stderr, where cargo test shows it: no root to install a shell
// from a test, and `.ci/run` (which has it) makes a missing one fail instead.
#[allow(clippy::print_stderr)]
fn run(shell: &str, script: &str) -> Option<Vec<String>> {
    let out = match Command::new(shell).arg("-c").arg(script).output() {
        Ok(out) => out,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{shell} is not installed; .ci/run installs it"
            );
            eprintln!("skipped: {shell} is not installed");
            return None;
        }
        Err(err) => panic!("{shell}: {err}"),
    };
    assert!(out.status.success(), "{shell}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        text.lines()
            // fish prints `word<TAB>description`, zsh's list `word:description`.
            .map(|line| line.split(['\t', ':']).next().unwrap_or("").to_owned())
            .collect(),
    )
}

fn has(words: &[String], expected: &[&str]) {
    for word in expected {
        assert!(
            words.iter().any(|got| got == word),
            "{word} not in {words:?}"
        );
    }
}

#[test]
fn bash_completes_commands_nested_options_and_values() {
    let script = script("bash");
    let complete = |words: &str, current: usize| {
        run(
            "bash",
            &format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={current}; _cjm_ctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ),
        )
    };
    let Some(top) = complete("cjm-ctl ex", 1) else {
        return;
    };
    assert_eq!(top, ["exec", "export-manifest"]);
    let jobs = complete("cjm-ctl jobs ''", 2).unwrap();
    has(
        &jobs,
        &["show", "stats", "history", "reorder", "--json", "--count"],
    );
    // Past an option, in the nested command: its own options.
    let history = complete("cjm-ctl jobs --json history --", 4).unwrap();
    has(&history, &["--plugin", "--state", "--limit", "--offset"]);
    assert!(!history.iter().any(|word| word == "--count"), "{history:?}");
    assert_eq!(complete("cjm-ctl completions z", 2).unwrap(), ["zsh"]);
    std::fs::remove_file(script).unwrap();
}

#[test]
fn zsh_completes_commands_nested_options_and_values() {
    let script = script("zsh");
    // `_describe` lists what it is given: completion widgets do not run under -c.
    let complete = |words: &str, current: usize| {
        run(
            "zsh",
            &format!(
                "autoload -Uz compinit && compinit -u -D; source {}; _describe() {{ print -rl -- \"${{(@P)4}}\" }}; words=({words}); CURRENT={current}; _cjm_ctl",
                script.display()
            ),
        )
    };
    let Some(top) = complete("cjm-ctl ''", 2) else {
        return;
    };
    has(&top, &["list", "exec", "jobs", "completions", "--version"]);
    let history = complete("cjm-ctl jobs history ''", 4).unwrap();
    has(&history, &["--plugin", "--state", "--limit", "--offset"]);
    assert!(!history.iter().any(|word| word == "--count"), "{history:?}");
    let values = complete("cjm-ctl completions ''", 3).unwrap();
    has(&values, &["bash", "zsh", "fish"]);
    std::fs::remove_file(script).unwrap();
}

#[test]
fn fish_completes_commands_nested_options_and_values() {
    let script = script("fish");
    let complete = |line: &str| {
        run(
            "fish",
            &format!("source {}; complete -C '{line}'", script.display()),
        )
    };
    let Some(top) = complete("cjm-ctl ex") else {
        return;
    };
    assert_eq!(top, ["exec", "export-manifest"]);
    let history = complete("cjm-ctl jobs history --").unwrap();
    has(&history, &["--plugin", "--state", "--limit", "--offset"]);
    assert!(!history.iter().any(|word| word == "--count"), "{history:?}");
    let secrets = complete("cjm-ctl secrets ").unwrap();
    has(&secrets, &["set", "list", "remove"]);
    let values = complete("cjm-ctl completions ").unwrap();
    has(&values, &["bash", "zsh", "fish"]);
    std::fs::remove_file(script).unwrap();
}
