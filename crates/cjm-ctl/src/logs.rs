use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use argh::FromArgs;
use cjm_daemon::DaemonClient;
use cjm_metadata::{validate_name, CjmHome};

/// How often `--follow` looks for new output.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Show the end of a plugin's worker log ($CJM_HOME/logs/NAME.log), through the
/// daemon when one serves CJM_HOME.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "logs")]
pub struct LogsCommand {
    /// name of the plugin
    #[argh(positional)]
    name: String,
    /// how many lines to show (default 50)
    #[argh(option, short = 'n', default = "50")]
    lines: usize,
    /// keep printing what is appended, until Ctrl-C
    #[argh(switch, short = 'f')]
    follow: bool,
    /// read the file here even when a daemon serves CJM_HOME
    #[argh(switch)]
    local: bool,
}

pub fn run(command: LogsCommand) -> Result<ExitCode> {
    validate_name(&command.name)?;
    if let Some(client) = crate::daemon_link::find(command.local)? {
        return through_daemon(&client, &command);
    }
    let path = CjmHome::from_env()?.log_path(&command.name);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "no log for plugin {} at {} (is it installed and was it started?)",
            command.name,
            path.display()
        )
    })?;
    crate::out::bytes(tail(&bytes, command.lines))?;
    if !command.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        tokio::select! {
            result = follow(&path, bytes.len() as u64) => result.map(|()| ExitCode::SUCCESS),
            _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
        }
    })
}

/// The log as the daemon serves it: the tail, then (`--follow`) its `lines` events.
fn through_daemon(client: &DaemonClient, command: &LogsCommand) -> Result<ExitCode> {
    let path = format!("/api/plugins/{}/logs?tail={}", command.name, command.lines);
    crate::daemon_link::block_on(async {
        if !command.follow {
            let answer = client.get(&path).await?;
            print_lines(&answer)?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut events = client.events(&format!("{path}&follow=true"), None).await?;
        let follow = async {
            while let Some(event) = events.next().await {
                let event = event.context("the daemon's log stream broke")?;
                if event.kind == "lines" {
                    print_lines(&serde_json::from_str(&event.data)?)?;
                }
            }
            anyhow::Ok(())
        };
        tokio::select! {
            result = follow => result.map(|()| ExitCode::SUCCESS),
            _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
        }
    })?
}

fn print_lines(answer: &serde_json::Value) -> Result<()> {
    for line in answer["lines"].as_array().into_iter().flatten() {
        crate::out::outln!("{}", line.as_str().unwrap_or_default())?;
    }
    Ok(())
}

/// The last `lines` lines of `bytes` (a final line without a newline counts).
fn tail(bytes: &[u8], lines: usize) -> &[u8] {
    if lines == 0 {
        return &[];
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, byte)| **byte == b'\n')
        .nth(lines - 1)
        .map_or(0, |(index, _)| index + 1);
    &bytes[start..]
}

/// Print what is appended after `offset`, polling the file's length. A file that
/// shrinks (truncated or replaced) is read again from its start.
async fn follow(path: &Path, mut offset: u64) -> Result<()> {
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let Ok(mut file) = std::fs::File::open(path) else {
            continue;
        };
        let len = file.metadata()?.len();
        if len < offset {
            offset = 0;
        }
        if len == offset {
            continue;
        }
        file.seek(SeekFrom::Start(offset))?;
        let mut appended = Vec::new();
        file.take(len - offset).read_to_end(&mut appended)?;
        offset += appended.len() as u64;
        crate::out::bytes(&appended)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", 0), b"");
        assert_eq!(tail(b"", 3), b"");
    }
}
