//! `cjm-ctl completions bash|zsh|fish`: a completion script for the shell, made from
//! the command line's own help (argh's), so that it never lags behind a command or an
//! option added later.

use std::process::ExitCode;

use anyhow::{bail, Result};
use argh::FromArgs;

use crate::out::outln;

/// Print a shell completion script: `cjm-ctl completions bash >
/// ~/.local/share/bash-completion/completions/cjm-ctl`, `cjm-ctl completions zsh >
/// ~/.zfunc/_cjm-ctl` (a folder in fpath), or `cjm-ctl completions fish >
/// ~/.config/fish/completions/cjm-ctl.fish`.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "completions")]
pub struct CompletionsCommand {
    /// the shell: bash, zsh or fish
    #[argh(positional)]
    shell: String,
}

/// A command: its path of subcommand names, options and subcommands (each with its
/// one-line description).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) path: Vec<String>,
    pub(crate) options: Vec<Word>,
    pub(crate) commands: Vec<Word>,
}

/// A word to complete, and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) word: String,
    pub(crate) about: String,
}

pub fn run(command: CompletionsCommand) -> Result<ExitCode> {
    let tree = tree(&|path| crate::help_of(path));
    let script = match command.shell.as_str() {
        "bash" => bash(&tree),
        "zsh" => zsh(&tree),
        "fish" => fish(&tree),
        other => bail!("completions {other:?}: not a shell this knows (bash, zsh, fish)"),
    };
    outln!("{script}")?;
    Ok(ExitCode::SUCCESS)
}

/// Every command reachable from the top, read from `help(path)`, the help text of
/// the command at `path`.
pub(crate) fn tree(help: &dyn Fn(&[&str]) -> String) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut pending = vec![Vec::<String>::new()];
    while let Some(path) = pending.pop() {
        let words: Vec<&str> = path.iter().map(String::as_str).collect();
        let (options, commands) = sections(&help(&words));
        for command in &commands {
            let mut deeper = path.clone();
            deeper.push(command.word.clone());
            pending.push(deeper);
        }
        nodes.push(Node {
            path,
            options,
            commands,
        });
    }
    nodes.sort_by(|a, b| a.path.cmp(&b.path));
    nodes
}

/// The options and the commands an argh help text lists. An entry starts two spaces
/// in; its description may go on, further in, on the lines after.
fn sections(help: &str) -> (Vec<Word>, Vec<Word>) {
    #[derive(PartialEq)]
    enum In {
        Other,
        Options,
        Commands,
    }
    let (mut options, mut commands) = (Vec::new(), Vec::new());
    let mut section = In::Other;
    for line in help.lines() {
        match line.trim_end() {
            "Options:" => section = In::Options,
            "Commands:" => section = In::Commands,
            text if !text.starts_with(' ') => section = In::Other,
            text => {
                let entry = text
                    .strip_prefix("  ")
                    .filter(|rest| !rest.starts_with(' '));
                let target = match section {
                    In::Options => &mut options,
                    In::Commands => &mut commands,
                    In::Other => continue,
                };
                match entry {
                    Some(entry) => {
                        let (names, about) = entry.split_once("  ").unwrap_or((entry, ""));
                        // `-n, --count` and `--help, help`: the long name completes.
                        let word = names
                            .split(", ")
                            .find(|name| name.starts_with("--"))
                            .unwrap_or(names)
                            .trim()
                            .to_owned();
                        target.push(Word {
                            word,
                            about: about.trim().to_owned(),
                        });
                    }
                    None => {
                        if let Some(last) = target.last_mut() {
                            last.about.push(' ');
                            last.about.push_str(text.trim());
                        }
                    }
                }
            }
        }
    }
    (options, commands)
}

/// Values a command's positional argument takes from a fixed set, which argh's help
/// does not list.
const VALUES: &[(&str, &[(&str, &str)])] = &[(
    "completions",
    &[
        ("bash", "the script for bash"),
        ("zsh", "the script for zsh"),
        ("fish", "the script for fish"),
    ],
)];

/// The words at a node: its commands, its positional values, then its options.
fn words(node: &Node) -> impl Iterator<Item = Word> + '_ {
    let path = joined(node);
    let values = VALUES
        .iter()
        .filter(move |(at, _)| *at == path)
        .flat_map(|(_, values)| values.iter())
        .map(|(word, about)| Word {
            word: (*word).to_owned(),
            about: (*about).to_owned(),
        });
    node.commands
        .iter()
        .cloned()
        .chain(values)
        .chain(node.options.iter().cloned())
}

fn joined(node: &Node) -> String {
    node.path.join(" ")
}

/// Up to the first sentence's end.
fn short(about: &str) -> &str {
    let first = about.split(". ").next().unwrap_or(about);
    first.trim_end_matches('.')
}

/// `text` in single quotes for zsh (and bash): a quote ends the quoting, is escaped,
/// and starts it again.
fn sh_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// `text` in single quotes for fish, where a backslash escapes a quote or itself.
fn fish_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn bash(tree: &[Node]) -> String {
    let (mut all, mut commands) = (String::new(), String::new());
    for node in tree {
        let list: Vec<String> = words(node).map(|word| word.word).collect();
        all.push_str(&format!(
            "        \"{}\") echo '{}' ;;\n",
            joined(node),
            list.join(" ")
        ));
        let list: Vec<&str> = node
            .commands
            .iter()
            .map(|word| word.word.as_str())
            .collect();
        commands.push_str(&format!(
            "        \"{}\") echo '{}' ;;\n",
            joined(node),
            list.join(" ")
        ));
    }
    format!(
        r#"# bash completion for cjm-ctl (cjm-ctl completions bash)
_cjm_ctl_words() {{
    case "$1" in
{all}    esac
}}
_cjm_ctl_commands() {{
    case "$1" in
{commands}    esac
}}
_cjm_ctl() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" path="" word i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        [[ "$word" == -* ]] && continue
        if [[ " $(_cjm_ctl_commands "$path") " == *" $word "* ]]; then
            path="${{path:+$path }}$word"
        fi
    done
    COMPREPLY=($(compgen -W "$(_cjm_ctl_words "$path")" -- "$cur"))
}}
complete -F _cjm_ctl cjm-ctl
"#
    )
}

fn zsh(tree: &[Node]) -> String {
    let mut cases = String::new();
    for node in tree {
        let described: Vec<String> = words(node)
            .map(|word| {
                sh_quoted(&format!(
                    "{}:{}",
                    word.word.replace(':', "\\:"),
                    short(&word.about)
                ))
            })
            .collect();
        cases.push_str(&format!(
            "        \"{}\") choices=({}) ;;\n",
            joined(node),
            described.join(" ")
        ));
    }
    format!(
        r#"#compdef cjm-ctl
# zsh completion for cjm-ctl (cjm-ctl completions zsh)
_cjm_ctl_words() {{
    local -a choices
    case "$1" in
{cases}    esac
    print -rl -- "${{choices[@]}}"
}}
_cjm_ctl() {{
    local path="" word next
    local -a choices
    for word in "${{(@)words[2,CURRENT-1]}}"; do
        [[ "$word" == -* ]] && continue
        for next in "${{(@f)$(_cjm_ctl_words "$path")}}"; do
            if [[ "${{next%%:*}}" == "$word" ]]; then
                path="${{path:+$path }}$word"
                break
            fi
        done
    done
    choices=("${{(@f)$(_cjm_ctl_words "$path")}}")
    _describe -t commands 'cjm-ctl' choices
}}
compdef _cjm_ctl cjm-ctl
"#
    )
}

fn fish(tree: &[Node]) -> String {
    let mut script = String::from(
        "# fish completion for cjm-ctl (cjm-ctl completions fish)\n\
         function __cjm_ctl_path\n    \
             set -l words (commandline -opc)\n    \
             set -l path\n    \
             for word in $words[2..-1]\n        \
                 if string match -q -- '-*' $word\n            continue\n        end\n        \
                 set -l next (string trim -- \"$path $word\")\n        \
                 if contains -- \"$next\" $__cjm_ctl_commands\n            \
                     set path $next\n        end\n    \
             end\n    \
             echo -n $path\n\
         end\n\
         function __cjm_ctl_at\n    \
             set -l path (__cjm_ctl_path)\n    \
             test \"$path\" = \"$argv[1]\"\n\
         end\n",
    );
    let known: Vec<String> = tree
        .iter()
        .filter(|node| !node.path.is_empty())
        .map(|node| fish_quoted(&joined(node)))
        .collect();
    script.push_str(&format!(
        "set -g __cjm_ctl_commands {}\ncomplete -c cjm-ctl -f\n",
        known.join(" ")
    ));
    for node in tree {
        let condition = fish_quoted(&format!("__cjm_ctl_at {}", fish_quoted(&joined(node))));
        let values: Vec<Word> = words(node)
            .filter(|word| !word.word.starts_with('-'))
            .collect();
        for command in &values {
            script.push_str(&format!(
                "complete -c cjm-ctl -n {condition} -a {} -d {}\n",
                fish_quoted(&command.word),
                fish_quoted(short(&command.about))
            ));
        }
        for option in &node.options {
            let Some(long) = option.word.strip_prefix("--") else {
                continue;
            };
            script.push_str(&format!(
                "complete -c cjm-ctl -n {condition} -l {} -d {}\n",
                fish_quoted(long),
                fish_quoted(short(&option.about))
            ));
        }
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: &str = "Usage: x [<command>]\n\nAbout x.\n\nOptions:\n  --version         print the version\n  --help, help      display usage information\n\nCommands:\n  list              List things, and\n                    more.\n  jobs              Jobs.\n";
    const JOBS: &str = "Usage: x jobs\n\nJobs.\n\nOptions:\n  -n, --count       how many\n\nCommands:\n  show              Show one.\n";

    fn help(path: &[&str]) -> String {
        match path {
            [] => TOP.to_owned(),
            ["jobs"] => JOBS.to_owned(),
            _ => String::from("Usage: x\n\nOptions:\n  --json            json\n"),
        }
    }

    #[test]
    fn the_tree_is_read_from_the_help_with_long_names_and_joined_descriptions() {
        let tree = tree(&help);
        let paths: Vec<String> = tree.iter().map(joined).collect();
        assert_eq!(paths, ["", "jobs", "jobs show", "list"]);
        let top = &tree[0];
        assert_eq!(top.commands[0].word, "list");
        assert_eq!(top.commands[0].about, "List things, and more.");
        let options: Vec<&str> = top.options.iter().map(|o| o.word.as_str()).collect();
        assert_eq!(options, ["--version", "--help"]);
        assert_eq!(tree[1].options[0].word, "--count");
    }

    #[test]
    fn an_unknown_shell_is_refused_naming_the_known_ones() {
        let err = run(CompletionsCommand {
            shell: String::from("tcsh"),
        })
        .unwrap_err();
        assert!(err.to_string().contains("bash, zsh, fish"), "{err}");
    }
}
