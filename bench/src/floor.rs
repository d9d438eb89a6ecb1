//! The physical floor: a 16-byte request and a 16-byte answer between two processes,
//! with blocking sockets and nothing else in the way; over loopback TCP (the
//! protocol's transport, and the original's) and over a Unix-domain socket (what our
//! host gives native workers).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::measure::percentiles_us;
use crate::Options;

const MESSAGE: usize = 16;

/// Child side: listen where the parent says (`tcp`, or a Unix socket path), say
/// where on stdout, accept one connection and answer every 16 bytes with 16 bytes.
pub fn serve(on: Option<String>) -> Result<()> {
    let mut stdout = std::io::stdout();
    match on.as_deref() {
        Some("tcp") => {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            writeln!(stdout, "{}", listener.local_addr()?.port())?;
            stdout.flush()?;
            let (stream, _) = listener.accept()?;
            stream.set_nodelay(true)?;
            echo(stream)
        }
        Some(path) => {
            let listener = UnixListener::bind(path)?;
            writeln!(stdout, "ready")?;
            stdout.flush()?;
            let (stream, _) = listener.accept()?;
            echo(stream)
        }
        None => bail!("floor-server needs `tcp` or a socket path"),
    }
}

fn echo(mut stream: impl Read + Write) -> Result<()> {
    let mut buffer = [0u8; MESSAGE];
    while stream.read_exact(&mut buffer).is_ok() {
        stream.write_all(&buffer)?;
    }
    Ok(())
}

/// Median round trip over loopback TCP, in microseconds.
pub fn tcp_rtt_us(options: &Options) -> Result<f64> {
    let (mut child, line) = start_server("tcp")?;
    let port: u16 = line.trim().parse().context("floor server said no port")?;
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    let rtt = round_trips(stream, options);
    let _ = child.wait_timeout_or_kill(Duration::from_secs(2));
    rtt
}

/// Median round trip over a Unix-domain socket, in microseconds.
pub fn unix_rtt_us(options: &Options) -> Result<f64> {
    let path = socket_path(options);
    let _ = std::fs::remove_file(&path);
    let (mut child, _) = start_server(&path.to_string_lossy())?;
    let stream = UnixStream::connect(&path)?;
    let rtt = round_trips(stream, options);
    let _ = child.wait_timeout_or_kill(Duration::from_secs(2));
    let _ = std::fs::remove_file(&path);
    rtt
}

fn socket_path(options: &Options) -> PathBuf {
    options
        .out
        .with_file_name(format!("floor-{}.sock", std::process::id()))
}

fn start_server(on: &str) -> Result<(std::process::Child, String)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("floor-server")
        .arg(on)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
    Ok((child, line))
}

fn round_trips(mut stream: impl Read + Write, options: &Options) -> Result<f64> {
    let rounds = if options.quick { 2_000 } else { 20_000 };
    let mut samples = Vec::with_capacity(rounds);
    let mut buffer = [7u8; MESSAGE];
    for _ in 0..rounds {
        let start = Instant::now();
        stream.write_all(&buffer)?;
        stream.read_exact(&mut buffer)?;
        samples.push(start.elapsed());
    }
    Ok(percentiles_us(samples).0)
}

trait WaitOrKill {
    fn wait_timeout_or_kill(&mut self, limit: Duration) -> std::io::Result<()>;
}

impl WaitOrKill for std::process::Child {
    fn wait_timeout_or_kill(&mut self, limit: Duration) -> std::io::Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill()?;
        self.wait().map(drop)
    }
}
