//! `cjm-ctl new NAME [--python]`: a plugin that builds and installs as it is, and its
//! entry in the plugins.yaml beside it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use argh::FromArgs;
use serde_norway::Value;

use crate::install::manifest_writer::write_atomically;
use crate::out::outln;

/// The original's release a Python plugin is written for.
const ORIGINAL: &str = "cjm_plugin_system==0.0.20";

/// The cjm crates a native plugin depends on.
const CJM_CRATES: [&str; 2] = ["cjm-interface", "cjm-worker"];

/// Write a new plugin into PARENT/NAME and add it to PARENT/plugins.yaml (made if
/// missing): a Rust crate with a typed configuration, execute, a stream and tests,
/// or with --python a plugin of the original cjm_plugin_system's form.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "new")]
pub struct NewCommand {
    /// name of the plugin (and of its crate or Python package): ASCII letters,
    /// digits, '-' and '_', starting with a letter
    #[argh(positional)]
    name: String,
    /// write a Python plugin for the original's universal worker
    #[argh(switch)]
    python: bool,
    /// the folder to write it in (default: the current folder)
    #[argh(option, default = "PathBuf::from(\".\")")]
    dir: PathBuf,
    /// depend on the cjm crates of this source checkout
    #[argh(option)]
    cjm_path: Option<PathBuf>,
    /// depend on the cjm crates of this git repository
    #[argh(option)]
    cjm_git: Option<String>,
}

/// Why no plugin was written. Each names what was given and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error("invalid plugin name {name:?}: {reason}")]
    Name { name: String, reason: String },
    #[error("{} already exists; choose another name or folder", path.display())]
    Exists { path: PathBuf },
    #[error("--cjm-path and --cjm-git exclude each other; give one")]
    TwoSources,
    #[error(
        "--cjm-path {}: not a cjm-plugin-system checkout (no crates/cjm-worker/Cargo.toml)",
        path.display()
    )]
    NotACheckout { path: PathBuf },
    #[error("--cjm-git {url:?}: {reason}")]
    Git { url: String, reason: &'static str },
    #[error("--cjm-path and --cjm-git are for a Rust plugin; a Python one depends on {ORIGINAL}")]
    PythonWithCjmSource,
    #[error("{}: {reason}", path.display())]
    PluginsFile { path: PathBuf, reason: String },
    #[error(
        "{}: cannot add the entry to it as text ({reason}); add it by hand:\n{entry}",
        path.display()
    )]
    CannotAppend {
        path: PathBuf,
        reason: String,
        entry: String,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a native plugin gets the cjm crates from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CjmSource {
    /// A source checkout (its root folder).
    Path(PathBuf),
    Git(String),
    /// crates.io, at this version requirement.
    Registry(&'static str),
}

impl CjmSource {
    /// The `[dependencies]` lines of the cjm crates.
    fn dependency_lines(&self) -> String {
        CJM_CRATES
            .iter()
            .map(|krate| match self {
                CjmSource::Path(root) => format!(
                    "{krate} = {{ path = {} }}",
                    toml_string(&root.join("crates").join(krate).to_string_lossy())
                ),
                CjmSource::Git(url) => format!("{krate} = {{ git = {} }}", toml_string(url)),
                CjmSource::Registry(version) => format!("{krate} = {}", toml_string(version)),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The checkout cjm-ctl was built from, when it is still there.
fn own_checkout() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.parent()?;
    is_checkout(root).then(|| root.to_path_buf())
}

fn is_checkout(root: &Path) -> bool {
    CJM_CRATES
        .iter()
        .all(|krate| root.join("crates").join(krate).join("Cargo.toml").is_file())
}

fn cjm_source(command: &NewCommand) -> Result<CjmSource, NewError> {
    match (&command.cjm_path, &command.cjm_git) {
        (Some(_), Some(_)) => Err(NewError::TwoSources),
        (Some(path), None) => {
            let root = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            if is_checkout(&root) {
                Ok(CjmSource::Path(root))
            } else {
                Err(NewError::NotACheckout { path: path.clone() })
            }
        }
        (None, Some(url)) => {
            let reason = if url.trim().is_empty() {
                Some("is empty")
            } else if url.starts_with('-') {
                Some("must not start with '-'")
            } else if url.chars().any(char::is_control) {
                Some("contains a control character")
            } else {
                None
            };
            match reason {
                Some(reason) => Err(NewError::Git {
                    url: url.clone(),
                    reason,
                }),
                None => Ok(CjmSource::Git(url.clone())),
            }
        }
        // The crates are published as 0.1 once on crates.io.
        (None, None) => Ok(own_checkout().map_or(CjmSource::Registry("0.1"), CjmSource::Path)),
    }
}

/// Names no crate or Python module may take: Rust's keywords (2021 edition, reserved
/// ones included) and crates of its own, the crates a plugin depends on, and Python's
/// keywords and the modules the original's worker needs.
const RESERVED: &[&str] = &[
    "as",
    "break",
    "const",
    "continue",
    "crate",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "async",
    "await",
    "dyn",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "macro",
    "override",
    "priv",
    "typeof",
    "unsized",
    "virtual",
    "yield",
    "try",
    "gen",
    "core",
    "std",
    "alloc",
    "proc_macro",
    "test",
    "serde",
    "serde_json",
    "schemars",
    "cjm_interface",
    "cjm_worker",
    "and",
    "assert",
    "class",
    "def",
    "del",
    "elif",
    "except",
    "finally",
    "from",
    "global",
    "import",
    "is",
    "lambda",
    "nonlocal",
    "not",
    "or",
    "pass",
    "raise",
    "with",
    "none",
    "cjm_plugin_system",
    "json",
    "os",
    "sys",
    "typing",
    "importlib",
    "asyncio",
    "logging",
];

/// The rule a new plugin's name follows, said whole whichever part it breaks: the
/// name becomes a crate name, a Rust identifier and a Python module.
const NAME_RULE: &str = "a new plugin's name starts with an ASCII letter and holds only \
     ASCII letters, digits, '-' and '_' (it names a crate and a module)";

/// The name's problem, if any: cjm's name rules (`validate_name`), and what a crate
/// name, a Rust identifier and a Python module need besides.
fn name_problem(name: &str) -> Option<String> {
    let follows_rule = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if name.is_empty() {
        return Some(format!("it is empty; {NAME_RULE}"));
    }
    if !follows_rule {
        return Some(NAME_RULE.to_owned());
    }
    // Length, the one rule of cjm's own names left to break.
    if let Err(err) = cjm_metadata::validate_name(name) {
        return Some(err.reason.to_owned());
    }
    if RESERVED.contains(&module_name(name).to_ascii_lowercase().as_str()) {
        return Some("it is reserved (a keyword, or a crate or module the plugin needs)".into());
    }
    None
}

/// The crate's library, and the Python package's module: `-` becomes `_`.
fn module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// `my-plugin` -> `MyPlugin`, for the type names.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

fn fill(template: &str, name: &str, cjm_deps: &str) -> String {
    template
        .replace("@NAME@", name)
        .replace("@LIB@", &module_name(name))
        .replace("@TYPE@", &type_name(name))
        .replace("@ORIGINAL@", ORIGINAL)
        .replace("@CJM_DEPS@", cjm_deps)
}

/// The files of the plugin, relative to its folder.
fn plugin_files(name: &str, python: bool, cjm: Option<&CjmSource>) -> Vec<(PathBuf, String)> {
    let module = module_name(name);
    if python {
        let package = PathBuf::from(&module);
        vec![
            (
                "pyproject.toml".into(),
                fill(include_str!("new/python_pyproject.toml.tmpl"), name, ""),
            ),
            (
                package.join("__init__.py"),
                format!("\"\"\"{name}, a cjm plugin.\"\"\"\n"),
            ),
            (
                package.join("meta.py"),
                fill(include_str!("new/python_meta.py.tmpl"), name, ""),
            ),
            (
                package.join("plugin.py"),
                fill(include_str!("new/python_plugin.py.tmpl"), name, ""),
            ),
        ]
    } else {
        let deps = cjm.map(CjmSource::dependency_lines).unwrap_or_default();
        // From a checkout, the lock file starts as the checkout's: the versions the cjm
        // crates are tested with, and the ones a build there has compiled already.
        let lock = match cjm {
            Some(CjmSource::Path(root)) => std::fs::read_to_string(root.join("Cargo.lock")).ok(),
            _ => None,
        };
        let mut files = vec![
            (
                "Cargo.toml".into(),
                fill(include_str!("new/native_cargo.toml.tmpl"), name, &deps),
            ),
            (".gitignore".into(), "/target\n".into()),
            (
                "src/lib.rs".into(),
                fill(include_str!("new/native_lib.rs.tmpl"), name, ""),
            ),
            (
                "src/main.rs".into(),
                fill(include_str!("new/native_main.rs.tmpl"), name, ""),
            ),
        ];
        if let Some(lock) = lock {
            files.push(("Cargo.lock".into(), lock));
        }
        files
    }
}

/// The plugins.yaml entry, as list item lines indented by `indent` spaces.
fn yaml_entry(name: &str, python: bool, indent: usize) -> String {
    let pad = " ".repeat(indent);
    if python {
        format!(
            "{pad}- name: {name}\n{pad}  python_version: \"3\"\n{pad}  package: ./{name}\n\
             {pad}  interface_libs: [\"{ORIGINAL}\"]\n"
        )
    } else {
        format!("{pad}- name: {name}\n{pad}  cargo:\n{pad}    path: {name}\n")
    }
}

/// The plugins list of a plugins.yaml's text (empty when the key has no value).
fn plugins_list(text: &str) -> Result<Vec<Value>, String> {
    let document: Value =
        serde_norway::from_str(text).map_err(|err| format!("not valid YAML: {err}"))?;
    match document.get("plugins") {
        Some(Value::Sequence(plugins)) => Ok(plugins.clone()),
        Some(Value::Null) => Ok(Vec::new()),
        Some(_) => Err("\"plugins\" is not a list".into()),
        None if document.is_null() => Ok(Vec::new()),
        None => Err("it has no \"plugins\" list".into()),
    }
}

/// The plugins.yaml text with the new entry: a new file, or the old text with the
/// entry appended, checked by parsing it again (comments and layout stay as they are).
fn plugins_yaml(path: &Path, name: &str, python: bool) -> Result<String, NewError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(format!(
                "# The plugins `cjm-ctl install-all --config {}` installs; paths are \
                 relative to this file.\nplugins:\n{}",
                path.file_name()
                    .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
                yaml_entry(name, python, 2)
            ));
        }
        Err(err) => {
            return Err(NewError::PluginsFile {
                path: path.to_owned(),
                reason: format!("cannot read it: {err}"),
            })
        }
    };
    let problem = |reason: String| NewError::PluginsFile {
        path: path.to_owned(),
        reason,
    };
    let before = plugins_list(&existing).map_err(problem)?;
    if before
        .iter()
        .any(|entry| entry.get("name").and_then(Value::as_str) == Some(name))
    {
        return Err(problem(format!("it lists a plugin {name} already")));
    }
    let mut base = existing.clone();
    if !base.is_empty() && !base.ends_with('\n') {
        base.push('\n');
    }
    if serde_norway::from_str::<Value>(&base).is_ok_and(|document| document.is_null()) {
        // Empty, or comments only.
        base.push_str("plugins:\n");
    }
    let new_entry: Vec<Value> = serde_norway::from_str(&yaml_entry(name, python, 0))
        .map_err(|err| problem(format!("the new entry is not YAML: {err}")))?;
    // The list's own indentation: two spaces as written here, or none.
    for indent in [2, 0] {
        let candidate = format!("{base}{}", yaml_entry(name, python, indent));
        if let Ok(after) = plugins_list(&candidate) {
            if after.len() == before.len() + 1
                && after[..before.len()] == before[..]
                && after[before.len()..] == new_entry[..]
            {
                return Ok(candidate);
            }
        }
    }
    Err(NewError::CannotAppend {
        path: path.to_owned(),
        reason: "\"plugins\" is not the last block list of the file".into(),
        entry: yaml_entry(name, python, 2),
    })
}

pub fn run(command: NewCommand) -> Result<ExitCode> {
    if let Some(reason) = name_problem(&command.name) {
        return Err(NewError::Name {
            name: command.name.clone(),
            reason,
        }
        .into());
    }
    let cjm = if command.python {
        if command.cjm_path.is_some() || command.cjm_git.is_some() {
            return Err(NewError::PythonWithCjmSource.into());
        }
        None
    } else {
        Some(cjm_source(&command)?)
    };
    let folder = command.dir.join(&command.name);
    if folder.exists() {
        return Err(NewError::Exists { path: folder }.into());
    }
    let yaml_path = command.dir.join("plugins.yaml");
    // Worked out before anything is written: a plugins.yaml it cannot extend stops it.
    let yaml = plugins_yaml(&yaml_path, &command.name, command.python)?;

    std::fs::create_dir_all(&command.dir).map_err(|source| NewError::Write {
        path: command.dir.clone(),
        source,
    })?;
    std::fs::create_dir(&folder).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => NewError::Exists {
            path: folder.clone(),
        },
        _ => NewError::Write {
            path: folder.clone(),
            source,
        },
    })?;
    let written = write_files(
        &folder,
        &plugin_files(&command.name, command.python, cjm.as_ref()),
    )
    .and_then(|()| {
        write_atomically(&yaml_path, yaml.as_bytes()).map_err(|source| NewError::Write {
            path: yaml_path.clone(),
            source,
        })
    });
    if let Err(err) = written {
        // The folder is this command's own, made above: nothing of the user's is lost.
        let _ = std::fs::remove_dir_all(&folder);
        return Err(err.into());
    }

    let kind = if command.python {
        "Python plugin"
    } else {
        "plugin"
    };
    outln!("wrote {kind} {} in {}", command.name, folder.display())?;
    if let Some(cjm) = &cjm {
        match cjm {
            CjmSource::Path(root) => outln!("  the cjm crates: from {}", root.display())?,
            CjmSource::Git(url) => outln!("  the cjm crates: from {url}")?,
            CjmSource::Registry(version) => outln!("  the cjm crates: {version} from crates.io")?,
        }
    }
    outln!(
        "added it to {}; install and run it with:",
        yaml_path.display()
    )?;
    outln!("  cjm-ctl install-all --config {}", yaml_path.display())?;
    outln!("  cjm-ctl exec {} --args '[\"world\"]'", command.name)?;
    Ok(ExitCode::SUCCESS)
}

fn write_files(folder: &Path, files: &[(PathBuf, String)]) -> Result<(), NewError> {
    for (relative, contents) in files {
        let path = folder.join(relative);
        let write = |path: &Path| {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, contents)
        };
        write(&path).map_err(|source| NewError::Write { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_make_a_crate_and_a_module() {
        for good in ["my-plugin", "whisper_local", "A1", "echo2"] {
            assert_eq!(name_problem(good), None, "{good}");
        }
        for (bad, expected) in [
            ("", "empty"),
            ("../x", NAME_RULE),
            ("9lives", NAME_RULE),
            ("voxtral.v2", NAME_RULE),
            ("a b", NAME_RULE),
            (&"a".repeat(129), "longer than 128"),
            ("test", "reserved"),
            ("serde-json", "reserved"),
            ("class", "reserved"),
            ("Self", "reserved"),
        ] {
            let problem = name_problem(bad).unwrap_or_default();
            assert!(problem.contains(expected), "{bad}: {problem}");
            // Said once: no clause of cjm's own name errors repeated inside.
            assert!(!problem.contains("invalid name"), "{bad}: {problem}");
        }
    }

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("my-plugin"), "MyPlugin");
        assert_eq!(type_name("whisper_local2"), "WhisperLocal2");
        assert_eq!(type_name("a--b"), "AB");
    }

    #[test]
    fn cjm_dependencies_by_path_git_or_version() {
        let path = CjmSource::Path("/src/cjm \"x\"".into()).dependency_lines();
        assert!(
            path.contains(r#"cjm-worker = { path = "/src/cjm \"x\"/crates/cjm-worker" }"#),
            "{path}"
        );
        let git = CjmSource::Git("https://example.invalid/cjm.git".into()).dependency_lines();
        assert!(git.contains(r#"cjm-interface = { git = "https://example.invalid/cjm.git" }"#));
        assert_eq!(
            CjmSource::Registry("0.1").dependency_lines(),
            "cjm-interface = \"0.1\"\ncjm-worker = \"0.1\""
        );
        // Built from this checkout, which is here: it is the default.
        assert_eq!(
            own_checkout().map(|root| is_checkout(&root)),
            Some(true),
            "{:?}",
            own_checkout()
        );
    }

    #[test]
    fn an_entry_is_appended_to_an_existing_list_or_starts_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugins.yaml");
        let fresh = plugins_yaml(&path, "p", false).unwrap();
        assert_eq!(plugins_list(&fresh).unwrap().len(), 1);

        let indented = "# mine\nplugins:\n  - name: a\n    executable: /bin/a\n";
        std::fs::write(&path, indented).unwrap();
        let appended = plugins_yaml(&path, "p", true).unwrap();
        assert!(appended.starts_with(indented), "{appended}");
        let entries = plugins_list(&appended).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1]["package"].as_str(), Some("./p"));

        std::fs::write(&path, "plugins:\n- name: a\n  executable: /bin/a").unwrap();
        let flush = plugins_yaml(&path, "p", false).unwrap();
        assert_eq!(plugins_list(&flush).unwrap().len(), 2, "{flush}");

        std::fs::write(&path, "plugins:\n").unwrap();
        assert_eq!(
            plugins_list(&plugins_yaml(&path, "p", false).unwrap())
                .unwrap()
                .len(),
            1
        );

        std::fs::write(&path, "plugins:\n  - name: p\n    executable: /bin/p\n").unwrap();
        let twice = plugins_yaml(&path, "p", false).unwrap_err().to_string();
        assert!(twice.contains("lists a plugin p already"), "{twice}");

        std::fs::write(&path, "plugins: []\n").unwrap();
        let flow = plugins_yaml(&path, "p", false).unwrap_err().to_string();
        assert!(
            flow.contains("add it by hand") && flow.contains("- name: p"),
            "{flow}"
        );

        std::fs::write(&path, "plugins: [").unwrap();
        let broken = plugins_yaml(&path, "p", false).unwrap_err().to_string();
        assert!(broken.contains("not valid YAML"), "{broken}");
    }
}
