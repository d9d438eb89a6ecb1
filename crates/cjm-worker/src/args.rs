use std::fmt;

/// The worker's command line: `[plugin args..] (--port P | --fd N | --listen ADDR:PORT
/// [--lease-secs N]) [--ppid PID] | --manifest | --help`.
///
/// The original 0.0.46 host starts a plugin as `<python_path> -m
/// cjm_plugin_system.core.worker --module M --class C --fd N --ppid P [--adapters
/// A]`; with our binary as `python_path` those Python-worker arguments are accepted
/// and ignored, so that host can run our workers unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerArgs {
    /// `--port P`: serve on `127.0.0.1:P`.
    pub port: Option<u16>,
    /// `--ppid PID`: exit when that process ends.
    pub ppid: Option<u32>,
    /// `--fd N`: serve on the listening socket inherited as descriptor N (the
    /// original 0.0.46 host's way of handing one over).
    pub fd: Option<i32>,
    /// `--listen ADDR:PORT`: serve TLS on this address, for a host on another machine
    /// (see `remote.rs`).
    pub listen: Option<std::net::SocketAddr>,
    /// `--lease-secs N`: with `--listen`, exit after N seconds without a request.
    pub lease_secs: Option<u64>,
    /// `--manifest`: print the manifest fields and exit.
    pub manifest: bool,
    /// `-h` or `--help`: print the usage and exit.
    pub help: bool,
    /// Everything else (the manifest's `args`), for the plugin itself.
    pub plugin_args: Vec<String>,
}

/// A worker argument that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerArgsError {
    /// The flag, such as `--port`.
    pub flag: &'static str,
    /// The value given; `None` when it was missing.
    pub value: Option<String>,
}

impl fmt::Display for WorkerArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "invalid value {value:?} for {}", self.flag),
            None => write!(f, "{} needs a value", self.flag),
        }
    }
}

impl std::error::Error for WorkerArgsError {}

impl WorkerArgs {
    /// Parse the arguments after the program name; unknown ones go to `plugin_args`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, WorkerArgsError> {
        let mut parsed = WorkerArgs::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline_value) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_owned(), Some(value.to_owned()))
                }
                _ => (arg.clone(), None),
            };
            match flag.as_str() {
                "--port" => {
                    let value = inline_value.or_else(|| args.next());
                    parsed.port = Some(parse_number(value, "--port")?);
                }
                "--ppid" => {
                    let value = inline_value.or_else(|| args.next());
                    parsed.ppid = Some(parse_number(value, "--ppid")?);
                }
                "--fd" => {
                    let value = inline_value.or_else(|| args.next());
                    parsed.fd = Some(parse_number(value, "--fd")?);
                }
                "--listen" => {
                    let value = inline_value.or_else(|| args.next());
                    parsed.listen = Some(parse_number(value, "--listen")?);
                }
                "--lease-secs" => {
                    let value = inline_value.or_else(|| args.next());
                    parsed.lease_secs = Some(parse_number(value, "--lease-secs")?);
                }
                // The original's Python worker's own arguments: nothing for us.
                "-m" | "--module" | "--class" | "--adapters" => {
                    if inline_value.is_none() {
                        args.next();
                    }
                }
                "--manifest" => parsed.manifest = true,
                "-h" | "--help" => parsed.help = true,
                _ => parsed.plugin_args.push(arg),
            }
        }
        Ok(parsed)
    }
}

fn parse_number<T: std::str::FromStr>(
    value: Option<String>,
    flag: &'static str,
) -> Result<T, WorkerArgsError> {
    let value = value.ok_or(WorkerArgsError { flag, value: None })?;
    value.parse().map_err(|_| WorkerArgsError {
        flag,
        value: Some(value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<WorkerArgs, WorkerArgsError> {
        WorkerArgs::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn separates_worker_flags_from_plugin_args() {
        let args = parse(&["--model", "tiny", "--port", "4100", "--ppid=77"]).unwrap();
        assert_eq!(args.port, Some(4100));
        assert_eq!(args.ppid, Some(77));
        assert!(!args.manifest);
        assert_eq!(args.plugin_args, ["--model", "tiny"]);
        assert!(parse(&["--manifest"]).unwrap().manifest);
        assert!(parse(&["-h"]).unwrap().help);
        assert!(parse(&["--help"]).unwrap().help);
    }

    #[test]
    fn the_original_hosts_python_worker_arguments_are_ignored() {
        let args = parse(&[
            "-m",
            "cjm_plugin_system.core.worker",
            "--module",
            "cjm_echo.plugin",
            "--class",
            "EchoPlugin",
            "--fd",
            "5",
            "--ppid",
            "77",
            "--adapters",
            "a.b:C",
        ])
        .unwrap();
        assert_eq!(args.fd, Some(5));
        assert_eq!(args.ppid, Some(77));
        assert!(args.plugin_args.is_empty(), "{:?}", args.plugin_args);
    }

    #[test]
    fn a_remote_worker_listens_on_an_address_with_a_lease() {
        let args = parse(&["--listen", "0.0.0.0:0", "--lease-secs=30"]).unwrap();
        assert_eq!(args.listen, Some("0.0.0.0:0".parse().unwrap()));
        assert_eq!(args.lease_secs, Some(30));
        assert_eq!(
            parse(&["--listen", "localhost"]).unwrap_err().to_string(),
            "invalid value \"localhost\" for --listen"
        );
    }

    #[test]
    fn bad_values_name_the_flag() {
        assert_eq!(
            parse(&["--port", "http"]).unwrap_err().to_string(),
            "invalid value \"http\" for --port"
        );
        assert_eq!(parse(&["--port", "70000"]).unwrap_err().flag, "--port");
        assert_eq!(
            parse(&["--ppid"]).unwrap_err().to_string(),
            "--ppid needs a value"
        );
    }
}
