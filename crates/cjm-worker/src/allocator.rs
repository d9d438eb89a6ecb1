//! Allocator settings for a worker process (glibc only).
//!
//! glibc hands buffers above 128 KiB straight to `mmap` and back to the kernel on free
//! (and trims freed heap tops eagerly), so every large request or result costs fresh
//! page faults and zeroing: a 10 MiB argument in and back ran at ~150 MiB/s, almost all
//! of it in the kernel. Workers move large payloads over and over, so large buffers
//! are kept for reuse instead, and returned to the kernel once the worker has been idle
//! for a moment, so an idle worker stays small.
//!
//! One arena for every thread: a call may run on the I/O thread, a pool thread or
//! whichever thread tokio gave the I/O to (see `offload.rs`), so with glibc's arena
//! per thread a large buffer freed by one call sat in another thread's arena while the
//! next call page-faulted a fresh one in its own (10 MiB in and back: 420-470 MiB/s,
//! 530-600 with one arena, alternately in one session). The threads that allocate are
//! few, so the one arena's lock costs nothing measurable.
//!
//! Through `libc`: `mallopt` and `malloc_trim` are glibc functions, not system calls,
//! so rustix has no binding for them.

use std::sync::atomic::{AtomicBool, Ordering};

/// Buffers up to this size come from the heap and are reused.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 64 * 1024 * 1024;
/// Freed memory kept at the heap's top before glibc itself gives it back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 256 * 1024 * 1024;

/// Requests were served (or the worker started) since the last trim: there may be
/// memory to give back.
static DIRTY: AtomicBool = AtomicBool::new(true);
/// Requests were served since the last tick of the control loop: not idle yet.
static BUSY: AtomicBool = AtomicBool::new(false);

/// Keep large buffers for reuse, in one arena. Called once, at the start of
/// `cjm_worker::main`.
pub(crate) fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads
    // allocate concurrently.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// A request was served: memory may be held that an idle worker should give back.
pub(crate) fn note_activity() {
    DIRTY.store(true, Ordering::Relaxed);
    BUSY.store(true, Ordering::Relaxed);
}

/// Called by the control loop at a steady period: once a whole period went by
/// without requests (after start, or after some were served), gives freed memory
/// back to the kernel and unmaps the code pages the worker holds (`resident.rs`), so
/// that an idle worker stays small whatever it did before.
pub(crate) fn on_idle_tick() {
    if BUSY.swap(false, Ordering::Relaxed) || !DIRTY.swap(false, Ordering::Relaxed) {
        return;
    }
    crate::resident::release_clean_file_pages();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
