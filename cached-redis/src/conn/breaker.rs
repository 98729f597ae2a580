//! The circuit breaker: after `threshold` consecutive outages calls skip Redis for `cooldown`,
//! then one probe goes through, and its outcome closes the breaker or opens it again.
//!
//! Time is `tokio::time`'s, so tests can pause the clock. A probe is an ordinary call that may
//! be cancelled at any await: the [`Pass`] that admits it frees the probe slot when dropped
//! without an outcome, so the next call probes instead of the breaker staying open for good.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    epoch: Instant,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the breaker is open; 0 when closed.
    open_until_ms: AtomicU64,
    /// Whether a probe is under way (only while open, past the cooldown).
    probing: AtomicBool,
}

/// Leave for one Redis call. Report its outcome with [`Pass::succeeded`] or [`Pass::failed`];
/// dropped without one (the call was cancelled or panicked), a probe lets the next call probe.
#[derive(Debug)]
pub(crate) struct Pass<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            epoch: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Lets a call through (`None` while open): every call while closed, one probe at a time
    /// once the cooldown is over.
    pub(crate) fn admit(&self) -> Option<Pass<'_>> {
        let until = self.open_until_ms.load(Ordering::Acquire);
        let probe = until != 0;
        if probe {
            if self.now_ms() < until {
                return None;
            }
            self.probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .ok()?;
        }
        Some(Pass {
            breaker: self,
            probe,
        })
    }

    /// Whether calls are being skipped right now (without claiming a probe): [`admit`] would
    /// refuse one.
    ///
    /// [`admit`]: Breaker::admit
    pub(crate) fn is_open(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        until != 0 && (self.now_ms() < until || self.probing.load(Ordering::Acquire))
    }

    fn close(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        if self.open_until_ms.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!("redis answers again; cache resumes");
        }
    }

    fn count_failure(&self, probe: bool) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if probe || failures >= self.threshold {
            let cooldown = u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX);
            let until = self.now_ms().saturating_add(cooldown);
            self.open_until_ms.store(until.max(1), Ordering::Release);
        }
    }
}

impl Pass<'_> {
    /// Redis answered: the breaker closes.
    pub(crate) fn succeeded(mut self) {
        self.breaker.close();
        self.settle();
    }

    /// Redis was unreachable: one more consecutive failure; a failed probe reopens at once.
    pub(crate) fn failed(mut self) {
        self.breaker.count_failure(self.probe);
        self.settle();
    }

    fn settle(&mut self) {
        if std::mem::take(&mut self.probe) {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_millis(100);

    fn opened() -> Breaker {
        let breaker = Breaker::new(2, COOLDOWN);
        breaker.admit().unwrap().failed();
        assert!(!breaker.is_open(), "below the threshold");
        breaker.admit().unwrap().failed();
        assert!(breaker.is_open());
        breaker
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_probes_once_after_cooldown() {
        let breaker = opened();
        assert!(breaker.admit().is_none(), "open: calls are skipped");
        tokio::time::advance(COOLDOWN).await;
        let probe = breaker.admit().expect("the cooldown is over: a probe");
        assert!(breaker.admit().is_none(), "one probe at a time");
        probe.succeeded();
        assert!(!breaker.is_open());
        assert!(breaker.admit().is_some() && breaker.admit().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_another_cooldown() {
        let breaker = opened();
        tokio::time::advance(COOLDOWN).await;
        breaker.admit().unwrap().failed();
        assert!(breaker.admit().is_none());
        tokio::time::advance(COOLDOWN - Duration::from_millis(1)).await;
        assert!(breaker.admit().is_none(), "still cooling down");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(breaker.admit().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_without_an_outcome_lets_the_next_call_probe() {
        let breaker = opened();
        tokio::time::advance(COOLDOWN).await;
        drop(breaker.admit().expect("probe"));
        breaker
            .admit()
            .expect("the next call probes at once")
            .succeeded();
        assert!(!breaker.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_cancelled_at_its_await_lets_the_next_call_probe() {
        let breaker = opened();
        tokio::time::advance(COOLDOWN).await;
        let call = async {
            let pass = breaker.admit().expect("probe");
            std::future::pending::<()>().await;
            pass.succeeded();
        };
        assert!(tokio::time::timeout(COOLDOWN, call).await.is_err());
        assert!(
            breaker.admit().is_some(),
            "the cancelled probe freed its slot"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_failure_count() {
        let breaker = Breaker::new(2, COOLDOWN);
        breaker.admit().unwrap().failed();
        breaker.admit().unwrap().succeeded();
        breaker.admit().unwrap().failed();
        assert!(!breaker.is_open());
    }
}
