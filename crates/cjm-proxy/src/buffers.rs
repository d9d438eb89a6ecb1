//! Large request and response buffers kept between calls, per worker.
//!
//! With glibc's default settings every buffer above its mmap threshold is fresh
//! memory from the kernel, zeroed and faulted in page by page, and unmapped again on
//! free: sending or receiving 10 MiB spent more time in page faults than in copying.
//! A proxy keeps a few large buffers it has used, and writes the next large request
//! or reads the next large answer into one of them. They are given back to the
//! allocator once the proxy has gone a moment without large traffic, so an idle host
//! keeps nothing it does not need.

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use bytes::Bytes;
use std::time::Duration;

use tokio::time::Instant;

/// Smaller buffers are cheap to allocate: the allocator serves them from its heap.
const KEEP_AT_LEAST: usize = 1024 * 1024;
/// A buffer larger than this is a rare answer: it is not kept.
const KEEP_AT_MOST: usize = 256 * 1024 * 1024;
/// Enough for the request and the answer of a couple of calls in flight at once.
const SPARES: usize = 4;
/// Kept buffers go back to the allocator after this long without large traffic.
const KEEP_FOR: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Spares {
    buffers: Vec<Vec<u8>>,
    last_used: Option<Instant>,
    release_scheduled: bool,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct BufferPool {
    spares: Arc<Mutex<Spares>>,
}

impl BufferPool {
    /// A kept buffer (empty, with its capacity), or a new empty one.
    pub(crate) fn take(&self) -> Vec<u8> {
        let mut spares = self.lock();
        spares.last_used = Some(Instant::now());
        spares.buffers.pop().unwrap_or_default()
    }

    /// Keep `buffer` for a later answer if it is worth keeping.
    pub(crate) fn give_back(&self, mut buffer: Vec<u8>, runtime: &tokio::runtime::Handle) {
        if !(KEEP_AT_LEAST..=KEEP_AT_MOST).contains(&buffer.capacity()) {
            return;
        }
        buffer.clear();
        let mut spares = self.lock();
        if spares.buffers.len() >= SPARES {
            return;
        }
        spares.buffers.push(buffer);
        spares.last_used = Some(Instant::now());
        if !spares.release_scheduled {
            spares.release_scheduled = true;
            runtime.spawn(self.clone().release_when_unused());
        }
    }

    /// `buffer` as the body of a request; kept again once the request is sent and
    /// hyper drops it.
    pub(crate) fn lend_as_bytes(&self, buffer: Vec<u8>, runtime: &tokio::runtime::Handle) -> Bytes {
        if buffer.capacity() < KEEP_AT_LEAST {
            return Bytes::from(buffer);
        }
        Bytes::from_owner(Lent {
            buffer,
            pool: self.clone(),
            runtime: runtime.clone(),
        })
    }

    async fn release_when_unused(self) {
        loop {
            let wait = {
                let mut spares = self.lock();
                let unused_for = spares.last_used.map_or(KEEP_FOR, |at| at.elapsed());
                if unused_for >= KEEP_FOR {
                    spares.buffers = Vec::new();
                    spares.release_scheduled = false;
                    return;
                }
                KEEP_FOR - unused_for
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Spares> {
        self.spares.lock()
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.lock().buffers.len()
    }
}

/// A kept buffer on loan as a request body.
struct Lent {
    buffer: Vec<u8>,
    pool: BufferPool,
    runtime: tokio::runtime::Handle,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool
            .give_back(std::mem::take(&mut self.buffer), &self.runtime);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn keeps_large_buffers_for_a_while_and_reuses_them() {
        let pool = BufferPool::default();
        let runtime = tokio::runtime::Handle::current();
        let large = Vec::<u8>::with_capacity(4 * KEEP_AT_LEAST);
        let held = large.as_ptr();
        pool.give_back(large, &runtime);
        pool.give_back(Vec::with_capacity(16), &runtime);
        assert_eq!(pool.kept(), 1, "a small buffer is not kept");
        let again = pool.take();
        assert_eq!((again.as_ptr(), again.len()), (held, 0));
        pool.give_back(again, &runtime);

        tokio::time::sleep(KEEP_FOR / 2).await;
        assert_eq!(pool.kept(), 1);
        tokio::time::sleep(KEEP_FOR).await;
        assert_eq!(pool.kept(), 0, "given back once unused for a while");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_body_comes_back_when_it_is_dropped() {
        let pool = BufferPool::default();
        let runtime = tokio::runtime::Handle::current();
        let mut buffer = pool.take();
        buffer.resize(2 * KEEP_AT_LEAST, b'x');
        let held = buffer.as_ptr();
        let body = pool.lend_as_bytes(buffer, &runtime);
        assert_eq!((body.len(), body.as_ptr()), (2 * KEEP_AT_LEAST, held));
        let part = body.slice(10..20);
        drop(body);
        assert_eq!(pool.kept(), 0, "still lent while any part of it lives");
        drop(part);
        let kept = pool.take();
        assert_eq!(kept.as_ptr(), held);
        // A small body is plain bytes, never kept.
        let small = pool.lend_as_bytes(b"{}".to_vec(), &runtime);
        drop(small);
        assert_eq!(pool.kept(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_only_a_few() {
        let pool = BufferPool::default();
        let runtime = tokio::runtime::Handle::current();
        for _ in 0..5 {
            pool.give_back(Vec::with_capacity(KEEP_AT_LEAST), &runtime);
        }
        assert_eq!(pool.kept(), SPARES);
    }
}
