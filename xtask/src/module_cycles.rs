//! `cargo xtask module-cycles`: fails if the modules of a crate under `crates/` use
//! each other in a circle (a imports b, b imports a, directly or around).
//!
//! A module is a file; an edge is a path to another module's item in its code
//! (`crate::x::..`, `super::x::..`, `use crate::{x, ..}`), test modules left out.
//! A child using its parent's items is no edge: that is how Rust modules are read.
//! Not a compiler: paths built by macros are not seen. It finds what the restructure
//! of issue 18 removed (handler <-> configure/task/.., proxy <-> stream, listener <->
//! remote) and keeps them from coming back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

type Module = Vec<String>;

pub fn module_cycles() -> Result<()> {
    let root = crate::workspace_root()?;
    let mut circles = Vec::new();
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.join("src").is_dir())
        .collect();
    crates.sort();
    for krate in &crates {
        let graph = crate_graph(&krate.join("src"))?;
        for circle in circles_in(&graph) {
            let names: Vec<String> = circle.iter().map(display).collect();
            circles.push(format!(
                "{}: {}",
                krate.file_name().unwrap_or_default().to_string_lossy(),
                names.join(" <-> ")
            ));
        }
    }
    if circles.is_empty() {
        println!("no module circles in {} crates", crates.len());
        return Ok(());
    }
    for circle in &circles {
        println!("{circle}");
    }
    bail!("{} module circle(s)", circles.len())
}

fn display(module: &Module) -> String {
    if module.is_empty() {
        String::from("(crate root)")
    } else {
        module.join("::")
    }
}

/// Each module of the crate whose sources are in `src`, and the modules it uses.
fn crate_graph(src: &Path) -> Result<BTreeMap<Module, BTreeSet<Module>>> {
    let mut files = BTreeMap::new();
    collect(src, src, &mut files)?;
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let used = uses(without_tests(&strip_comments(&text)), module, &known)
            .into_iter()
            .filter(|used| used != module && !module.starts_with(used))
            .collect();
        graph.insert(module.clone(), used);
    }
    Ok(graph)
}

fn collect(src: &Path, dir: &Path, files: &mut BTreeMap<Module, PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if path != src.join("bin") {
                collect(src, &path, files)?;
            }
            continue;
        }
        if path.extension().is_none_or(|extension| extension != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src)?.with_extension("");
        let mut module: Module = relative
            .components()
            .map(|part| part.as_os_str().to_string_lossy().into_owned())
            .collect();
        match module.last().map(String::as_str) {
            Some("lib" | "main") if module.len() == 1 => module.clear(),
            Some("mod") => {
                module.pop();
            }
            _ => {}
        }
        files.insert(module, path);
    }
    Ok(())
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The code before the first `#[cfg(test)]`: test modules stand at the end of a file.
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// The known modules that `text` (the code of `module`) names.
fn uses(text: &str, module: &Module, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let mut used = BTreeSet::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent(module))] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            for path in paths_at(rest) {
                let mut full = base.clone();
                full.extend(path);
                if let Some(found) = longest_known(&full, base.len(), known) {
                    used.insert(found);
                }
            }
        }
    }
    used
}

fn parent(module: &Module) -> Module {
    module[..module.len().saturating_sub(1)].to_vec()
}

/// The paths that start at `text`: one (`a::b::c`) or a group (`{a, b::c}`).
fn paths_at(text: &str) -> Vec<Vec<String>> {
    if let Some(group) = text.strip_prefix('{') {
        let end = group.find('}').unwrap_or(group.len());
        return group[..end]
            .split(',')
            .map(|item| path_words(item.trim()))
            .filter(|path| !path.is_empty())
            .collect();
    }
    vec![path_words(text)]
}

fn path_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = text;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        words.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    words
}

/// The longest known module that `path` starts with, below `floor` words.
fn longest_known(path: &[String], floor: usize, known: &BTreeSet<Module>) -> Option<Module> {
    (floor + 1..=path.len())
        .rev()
        .map(|len| path[..len].to_vec())
        .find(|candidate| known.contains(candidate))
}

/// Strongly connected groups of more than one module (Tarjan's algorithm).
fn circles_in(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        circles: Vec<Vec<Module>>,
    }
    fn visit<'a>(state: &mut State<'a>, module: &'a Module) {
        let at = state.index.len();
        state.index.insert(module, at);
        state.low.insert(module, at);
        state.stack.push(module);
        state.on_stack.insert(module);
        let graph = state.graph;
        for used in graph.get(module).into_iter().flatten() {
            let Some((used, _)) = graph.get_key_value(used) else {
                continue;
            };
            if !state.index.contains_key(used) {
                visit(state, used);
                let low = state.low[used].min(state.low[module]);
                state.low.insert(module, low);
            } else if state.on_stack.contains(used) {
                let low = state.index[used].min(state.low[module]);
                state.low.insert(module, low);
            }
        }
        if state.low[module] == state.index[module] {
            let mut group = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                group.push(member.clone());
                if member == module {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                state.circles.push(group);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        circles: Vec::new(),
    };
    for module in graph.keys() {
        if !state.index.contains_key(module) {
            visit(&mut state, module);
        }
    }
    state.circles
}
