//! The physical floor: a 16-byte request and a 16-byte answer over loopback TCP
//! between two processes, with blocking sockets and nothing else in the way.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::measure::percentiles_us;
use crate::Options;

const MESSAGE: usize = 16;

/// Child side: accept one connection and answer every 16 bytes with 16 bytes.
pub fn serve() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let (mut stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut buffer = [0u8; MESSAGE];
    while stream.read_exact(&mut buffer).is_ok() {
        stream.write_all(&buffer)?;
    }
    Ok(())
}

pub fn rtt_us(options: &Options) -> Result<f64> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("floor-server")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
    let port: u16 = line.trim().parse().context("floor server said no port")?;
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    let rounds = if options.quick { 2_000 } else { 20_000 };
    let mut samples = Vec::with_capacity(rounds);
    let mut buffer = [7u8; MESSAGE];
    for _ in 0..rounds {
        let start = Instant::now();
        stream.write_all(&buffer)?;
        stream.read_exact(&mut buffer)?;
        samples.push(start.elapsed());
    }
    drop(stream);
    let _ = child.wait_timeout_or_kill(Duration::from_secs(2));
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
