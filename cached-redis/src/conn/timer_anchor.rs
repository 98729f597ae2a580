//! Keeps the runtime's timer driver from being woken by every Redis call's `op_timeout`.
//!
//! tokio wakes its timer driver (a write to an `eventfd`, and a parked worker's spurious turn)
//! whenever a timer is registered that is due before every timer the driver last parked
//! with. A cache's calls each register one (`op_timeout`, then dropped when Redis answers),
//! so on a runtime with no other timers every call paid a syscall on its own path and woke a
//! worker for nothing: 4 more `write`s and 5 more `epoll_wait`s per miss, and a miss ~20 µs
//! slower on the benchmark's machine.
//!
//! The anchor is one task that sleeps in a loop for half the shortest bound (at most a
//! second), so a timer due sooner than any call's deadline is always registered and the
//! driver parks knowing it. It runs only while the cache is used: a period with no call ends
//! it, and the next call starts it again, on that call's runtime; a cache dropped ends it at
//! once. It changes when the driver wakes, never when a timeout fires: without it (no
//! runtime, a task dropped with its runtime) calls are bounded as before.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;

/// No anchor runs.
const IDLE: u8 = 0;
/// The anchor runs, and no call came since its last period began.
const RUNNING: u8 = 1;
/// The anchor runs, and a call came since its last period began.
const USED: u8 = 2;

/// The longest period: an idle anchor ends within two.
const LONGEST_PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct TimerAnchor {
    state: Arc<AtomicU8>,
    period: Duration,
    /// The running task, ended with the anchor (its cache).
    task: Mutex<Option<AbortHandle>>,
}

impl TimerAnchor {
    /// An anchor for calls bounded by at least `shortest`.
    pub(crate) fn new(shortest: Duration) -> TimerAnchor {
        TimerAnchor {
            state: Arc::new(AtomicU8::new(IDLE)),
            period: (shortest / 2).clamp(Duration::from_millis(1), LONGEST_PERIOD),
            task: Mutex::new(None),
        }
    }

    /// Notes a call about to register its timer: starts the anchor if none runs. Costs one
    /// relaxed load while calls keep coming.
    #[inline]
    pub(crate) fn touch(&self) {
        let mut state = self.state.load(Relaxed);
        while state != USED {
            match self
                .state
                .compare_exchange_weak(state, USED, Relaxed, Relaxed)
            {
                Ok(IDLE) => return self.start(),
                Ok(_) => return,
                Err(now) => state = now,
            }
        }
    }

    #[cold]
    fn start(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.state.store(IDLE, Relaxed);
            return;
        };
        // Made before the task: a task dropped before its first poll (its runtime shutting
        // down) still lets the next call start another.
        let (mut running, period) = (Running(Arc::clone(&self.state)), self.period);
        let task = runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                // A period without a call ends the anchor; a call that comes meanwhile sees
                // `IDLE` and starts another.
                if running
                    .0
                    .compare_exchange(RUNNING, IDLE, Relaxed, Relaxed)
                    .is_ok()
                {
                    running.ended();
                    return;
                }
                running.0.store(RUNNING, Relaxed);
            }
        });
        let mut slot = self
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Some(task.abort_handle());
    }
}

impl Drop for TimerAnchor {
    fn drop(&mut self) {
        let task = self
            .task
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(task) = task.take() {
            task.abort();
        }
    }
}

/// The running anchor's state: dropped with its runtime (a test's, say, while the cache lives
/// on), it lets the next call start an anchor on its own runtime.
struct Running(Arc<AtomicU8>);

impl Running {
    /// The anchor ended by itself, having set `IDLE`: a call may have started another since,
    /// whose state this must no longer touch.
    fn ended(&mut self) {
        self.0 = Arc::new(AtomicU8::new(IDLE));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(IDLE, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn runs_while_used_and_ends_after_an_idle_period() {
        let anchor = TimerAnchor::new(Duration::from_millis(100));
        assert_eq!(anchor.state.load(Relaxed), IDLE);
        anchor.touch();
        assert_eq!(anchor.state.load(Relaxed), USED);
        // Used in every period: it keeps running.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            anchor.touch();
            assert_ne!(anchor.state.load(Relaxed), IDLE);
        }
        // Two idle periods end it; the next call starts it again.
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(anchor.state.load(Relaxed), IDLE);
        assert_eq!(Arc::strong_count(&anchor.state), 1, "its task ended");
        anchor.touch();
        assert_eq!(Arc::strong_count(&anchor.state), 2, "a task runs again");
    }

    #[test]
    fn a_runtime_gone_leaves_the_next_call_to_start_another() {
        let anchor = TimerAnchor::new(Duration::from_secs(60));
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("runtime")
        };
        let first = runtime();
        first.block_on(async {
            anchor.touch();
            tokio::task::yield_now().await;
        });
        assert_eq!(anchor.state.load(Relaxed), USED);
        drop(first);
        assert_eq!(anchor.state.load(Relaxed), IDLE, "its task was dropped");
        let second = runtime();
        second.block_on(async { anchor.touch() });
        assert_eq!(Arc::strong_count(&anchor.state), 2, "one runs on the other");
    }
}
