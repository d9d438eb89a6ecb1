//! What the plugin prints, attributed to a call where that can be known.
//!
//! Stdout and stderr are one pipe the worker reads (`install`), and each line goes to
//! the log as a [`LogLine`] of level [`OUTPUT`]. A line belongs to a call when that
//! call was the only one running plugin code when the line was read: a process has
//! one stdout, so with two calls at once nothing tells whose thread printed it, and
//! the line is left worker-level (no `call`) rather than guessed.
//!
//! Reading happens after writing, so a call that ends waits until what it printed is
//! read ([`Attributed`]'s drop): otherwise its last lines could be read once a next
//! call has started alone, and be given to that one. A call that printed nothing
//! pays one `ioctl` for that.

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cjm_interface::log_line::{LogLine, OUTPUT};
use parking_lot::{Condvar, Mutex};

use crate::log_lines::Sink;

/// A line longer than this is written out in pieces rather than held.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// The longest a call's end waits for its output to be read: a plugin thread
/// printing without pause must not hold its call's answer for ever.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

static OUTPUT_PIPE: OnceLock<Output> = OnceLock::new();

struct Output {
    read: OwnedFd,
    /// Set between the pipe saying it is readable and what was read being written
    /// out: with nothing unread in the pipe either, everything printed is out.
    busy: AtomicBool,
    state: Mutex<State>,
    /// Something read was written out.
    drained: Condvar,
    sink: Arc<Sink>,
}

struct State {
    /// Calls running plugin code.
    calls: Vec<String>,
    /// The start of a line whose end has not come yet.
    partial: Vec<u8>,
}

/// The log file, as a descriptor of its own, before stdout and stderr are routed
/// away from it.
pub(crate) fn log_file() -> io::Result<File> {
    // SAFETY: dup of this process's stderr; the new descriptor is ours alone.
    let fd = unsafe { libc::fcntl(libc::STDERR_FILENO, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just made, owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Route stdout and stderr through a pipe this process reads, and start the thread
/// that writes its lines to `sink`. Done once, before the plugin runs.
pub(crate) fn install(sink: Arc<Sink>) -> io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both just made, owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let _ = io::stdout().flush();
    for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: `write` is open; dup2 replaces the standard descriptor atomically.
        if unsafe { libc::dup2(write.as_raw_fd(), target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    drop(write);
    let output = Output {
        read,
        busy: AtomicBool::new(false),
        state: Mutex::new(State {
            calls: Vec::new(),
            partial: Vec::new(),
        }),
        drained: Condvar::new(),
        sink,
    };
    if OUTPUT_PIPE.set(output).is_err() {
        return Err(io::Error::other("the output pipe is installed already"));
    }
    // SAFETY: registers a plain `extern "C"` function with no arguments.
    if unsafe { libc::atexit(drain_at_exit) } != 0 {
        tracing::warn!("cannot have the worker's output written out at exit");
    }
    if let Some(output) = OUTPUT_PIPE.get() {
        if let Err(err) = drain_on_abort(output.read.as_raw_fd(), output.sink.raw_fd()) {
            tracing::warn!("cannot have the worker's output written out on abort: {err}");
        }
    }
    std::thread::Builder::new()
        .name(String::from("cjm-output"))
        .spawn(|| {
            if let Some(output) = OUTPUT_PIPE.get() {
                output.pump();
            }
        })
        .map(drop)
}

impl Output {
    fn pump(&self) {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let mut poll = libc::pollfd {
                fd: self.read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut poll, 1, -1) } < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            self.busy.store(true, Ordering::SeqCst);
            // SAFETY: `buffer` is writable for its length.
            let read = unsafe {
                libc::read(
                    self.read.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            match usize::try_from(read) {
                // Every writer gone: this process is ending.
                Ok(0) => return,
                Ok(count) => {
                    let mut state = self.state.lock();
                    state.partial.extend_from_slice(&buffer[..count]);
                    self.write_lines(&mut state);
                }
                Err(_) if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
            self.busy.store(false, Ordering::SeqCst);
            self.drained.notify_all();
        }
    }

    /// Write out every whole line held, and a held piece past the limit.
    fn write_lines(&self, state: &mut State) {
        while let Some(end) = state.partial.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = state.partial.drain(..=end).collect();
            self.write_line(&line[..end], &state.calls);
        }
        if state.partial.len() >= MAX_LINE_BYTES {
            let piece = std::mem::take(&mut state.partial);
            self.write_line(&piece, &state.calls);
        }
    }

    fn write_line(&self, bytes: &[u8], calls: &[String]) {
        let text = String::from_utf8_lossy(bytes);
        // A progress bar redraws its line with `\r`: only its last frame is kept.
        let text = text.rsplit('\r').next().unwrap_or_default().trim_end();
        if text.is_empty() {
            return;
        }
        self.sink.write(&LogLine {
            level: String::from(OUTPUT),
            call: match calls {
                [only] => Some(only.clone()),
                _ => None,
            },
            job: None,
            target: String::new(),
            msg: text.to_owned(),
            ts_ms: LogLine::now_ms(),
        });
    }

    /// Bytes in the pipe not read yet.
    fn unread(&self) -> usize {
        let mut count: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let ok = unsafe { libc::ioctl(self.read.as_raw_fd(), libc::FIONREAD, &mut count) } == 0;
        if ok {
            usize::try_from(count).unwrap_or(0)
        } else {
            0
        }
    }

    /// Wait until everything written to the pipe so far is out (or [`DRAIN_WAIT`]).
    fn wait_drained(&self) {
        let deadline = Instant::now() + DRAIN_WAIT;
        loop {
            if self.unread() == 0 && !self.busy.load(Ordering::SeqCst) {
                return;
            }
            let mut state = self.state.lock();
            if Instant::now() >= deadline {
                return;
            }
            // Timed: the pump may have finished between the check and this wait.
            self.drained.wait_for(&mut state, Duration::from_millis(2));
        }
    }
}

/// At exit (`std::process::exit`, the end of `main`), what was printed last is
/// written out before the process goes: a worker's last words before it gives up are
/// what its log is read for. A process killed by a signal loses what the pump had
/// not read yet, which it reads within microseconds of the write.
extern "C" fn drain_at_exit() {
    if let Some(output) = OUTPUT_PIPE.get() {
        output.flush_all();
    }
}

impl Output {
    /// Wait until everything printed so far is out, the start of a line included.
    fn flush_all(&self) {
        let _ = io::stdout().flush();
        self.wait_drained();
        let mut state = self.state.lock();
        if !state.partial.is_empty() {
            let piece = std::mem::take(&mut state.partial);
            self.write_line(&piece, &state.calls);
        }
    }
}

/// The pipe's read end and the log file, for [`on_abort`], which may take no lock.
static ABORT_FDS: [AtomicI32; 2] = [AtomicI32::new(-1), AtomicI32::new(-1)];

/// On `abort()` (a failed C or C++ assertion, a CUDA library giving up, Rust's own
/// stack-overflow or double-panic message, glibc's heap checks), what was printed
/// last is written out raw before the process goes: those are exactly the words its
/// log is read for, printed a moment before the signal, and they would otherwise die
/// unread in the pipe. Only `SIGABRT`: a segfault prints nothing of its own, and
/// std's handler for it (stack overflows) must stay.
fn drain_on_abort(read: libc::c_int, log: libc::c_int) -> io::Result<()> {
    ABORT_FDS[0].store(read, Ordering::SeqCst);
    ABORT_FDS[1].store(log, Ordering::SeqCst);
    // SAFETY: a zeroed sigaction is valid; `on_abort` only makes async-signal-safe
    // calls (poll, read, write, raise) on descriptors that live as long as the process.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_abort as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // The default action is back as the handler starts, so raising the signal
        // again at its end ends the process as the abort would have.
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

extern "C" fn on_abort(signal: libc::c_int) {
    let read = ABORT_FDS[0].load(Ordering::SeqCst);
    let log = ABORT_FDS[1].load(Ordering::SeqCst);
    // The pump runs on in its own thread while this one handles the signal, and may
    // have taken the last words out of the pipe without having written them yet.
    // Done only when the pipe is empty and the pump idle at once: drain, then wait
    // for a busy pump (bounded: atomics and nanosleep only), and look again.
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    let mut waited = 0;
    loop {
        drain_raw(read, log);
        let busy = OUTPUT_PIPE
            .get()
            .is_some_and(|output| output.busy.load(Ordering::SeqCst));
        if !busy || waited >= 200 {
            break;
        }
        waited += 1;
        // SAFETY: nanosleep is async-signal-safe; `pause` is a valid timespec.
        unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
    }
    // SAFETY: raising a signal is async-signal-safe.
    unsafe { libc::raise(signal) };
}

/// Copy what the pipe `read` holds now to `log`, raw, without blocking.
fn drain_raw(read: libc::c_int, log: libc::c_int) {
    let mut buffer = [0u8; 4096];
    loop {
        let mut poll = libc::pollfd {
            fd: read,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a zero timeout never blocks.
        if unsafe { libc::poll(&mut poll, 1, 0) } <= 0 {
            return;
        }
        // SAFETY: `buffer` is writable for its length.
        let count = unsafe { libc::read(read, buffer.as_mut_ptr().cast(), buffer.len()) };
        let Ok(count) = usize::try_from(count) else {
            return;
        };
        if count == 0 {
            return;
        }
        let mut written = 0;
        while written < count {
            // SAFETY: the bytes from `written` to `count` were just read into `buffer`.
            let wrote = unsafe {
                libc::write(log, buffer[written..count].as_ptr().cast(), count - written)
            };
            match usize::try_from(wrote) {
                Ok(wrote) if wrote > 0 => written += wrote,
                _ => return,
            }
        }
    }
}

/// A call running plugin code, for attributing output; dropped when that code
/// returns (see the module's doc).
#[must_use]
pub(crate) struct Attributed {
    id: String,
}

/// Count the call `id` as running plugin code, if output is routed at all.
pub(crate) fn attribute(id: &str) -> Option<Attributed> {
    let output = OUTPUT_PIPE.get()?;
    output.state.lock().calls.push(id.to_owned());
    Some(Attributed { id: id.to_owned() })
}

impl Drop for Attributed {
    fn drop(&mut self) {
        let Some(output) = OUTPUT_PIPE.get() else {
            return;
        };
        // What `print!` left in std's buffer too, before the pipe is checked.
        output.flush_all();
        let mut state = output.state.lock();
        if let Some(at) = state.calls.iter().position(|id| *id == self.id) {
            state.calls.swap_remove(at);
        }
    }
}
