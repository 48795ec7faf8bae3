//! A count of the engine threads still running, so that a process can let them finish before it
//! exits.
//!
//! An engine thread outlives the [`Engine`](crate::Engine) that started it by up to one decode
//! step: dropping the engine closes its queue, and the thread returns once the step in progress is
//! done. A process that exits during that step runs llama.cpp's global destructors while the
//! thread still uses the model, which can crash it. [`wait_for_engine_threads`] bridges that gap.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The engine threads of this process.
static ENGINE_THREADS: ThreadCount = ThreadCount::new();

/// A number of running threads that can be waited on to reach zero.
struct ThreadCount {
    live: Mutex<usize>,
    changed: Condvar,
}

impl ThreadCount {
    const fn new() -> Self {
        ThreadCount {
            live: Mutex::new(0),
            changed: Condvar::new(),
        }
    }

    fn enter(&'static self) -> LiveThread {
        *self.live.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        LiveThread { count: self }
    }

    #[cfg(test)]
    fn live(&self) -> usize {
        *self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        while *live > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            live = self
                .changed
                .wait_timeout(live, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// Held by an engine thread for as long as it runs.
pub(crate) struct LiveThread {
    count: &'static ThreadCount,
}

impl LiveThread {
    /// Counts the calling thread as a running engine thread until the value is dropped.
    pub(crate) fn enter() -> Self {
        ENGINE_THREADS.enter()
    }
}

impl Drop for LiveThread {
    fn drop(&mut self) {
        let mut live = self
            .count
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *live = live.saturating_sub(1);
        self.count.changed.notify_all();
    }
}

/// Waits until every engine thread has returned, at most `timeout`; `true` when none is left.
///
/// Call it after the last [`Engine`](crate::Engine) is dropped and before the process exits. It
/// blocks the calling thread, so call it outside the async runtime (after `block_on` returns).
///
/// ```
/// use std::time::Duration;
///
/// // No engine was started here, so there is nothing to wait for.
/// assert!(promptopt_engine::wait_for_engine_threads(Duration::from_millis(10)));
/// ```
pub fn wait_for_engine_threads(timeout: Duration) -> bool {
    ENGINE_THREADS.wait(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_ends_when_the_last_thread_returns() {
        static COUNT: ThreadCount = ThreadCount::new();
        let started = std::sync::Arc::new(std::sync::Barrier::new(3));
        let handles: Vec<_> = [20, 80]
            .into_iter()
            .map(|millis| {
                let started = std::sync::Arc::clone(&started);
                std::thread::spawn(move || {
                    let _live = COUNT.enter();
                    started.wait();
                    std::thread::sleep(Duration::from_millis(millis));
                })
            })
            .collect();
        started.wait();
        assert_eq!(COUNT.live(), 2);
        let waited = Instant::now();
        assert!(COUNT.wait(Duration::from_secs(10)));
        assert_eq!(COUNT.live(), 0);
        assert!(waited.elapsed() >= Duration::from_millis(60));
        for handle in handles {
            assert!(handle.join().is_ok());
        }
    }

    #[test]
    fn the_wait_gives_up_at_its_timeout() {
        static COUNT: ThreadCount = ThreadCount::new();
        let live = COUNT.enter();
        let started = Instant::now();
        assert!(!COUNT.wait(Duration::from_millis(30)));
        assert!(started.elapsed() >= Duration::from_millis(30));
        drop(live);
        assert!(COUNT.wait(Duration::ZERO));
    }
}
