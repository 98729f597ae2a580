//! The fail-open guard around every Redis call: a timeout, a circuit breaker and rate-limited
//! warnings.
//!
//! After `threshold` consecutive failures (timeouts, refused or dropped connections) the breaker
//! opens: calls skip Redis for `cooldown`, then one probe is let through; its success closes the
//! breaker, its failure opens it again. Errors Redis *answers* with (a wrong type, say) are not
//! outages and do not count.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Error;
use crate::stats::{Counters, bump};

#[derive(Debug)]
pub(crate) struct Guard {
    op_timeout: Duration,
    threshold: u32,
    cooldown: Duration,
    epoch: Instant,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the breaker is open; 0 when closed.
    open_until_ms: AtomicU64,
    probing: AtomicBool,
    last_warning: Mutex<Option<Instant>>,
    suppressed_warnings: AtomicU64,
}

/// The interval between two warnings about Redis trouble.
const WARN_EVERY: Duration = Duration::from_secs(5);

impl Guard {
    pub(crate) fn new(op_timeout: Duration, threshold: u32, cooldown: Duration) -> Guard {
        Guard {
            op_timeout,
            threshold: threshold.max(1),
            cooldown,
            epoch: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            last_warning: Mutex::new(None),
            suppressed_warnings: AtomicU64::new(0),
        }
    }

    pub(crate) fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether the breaker is open right now (without claiming a probe).
    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        until != 0 && (self.now_ms() < until || self.probing.load(Ordering::Acquire))
    }

    /// Runs one Redis call under the timeout and the breaker.
    pub(crate) async fn call<T>(
        &self,
        stats: &Counters,
        what: &'static str,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Error> {
        let probe = match self.admit() {
            Admit::Closed => false,
            Admit::Probe => true,
            Admit::Rejected => return Err(Error::Unavailable),
        };
        let result = match tokio::time::timeout(self.op_timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Redis(e)),
            Err(_) => Err(Error::Timeout(self.op_timeout)),
        };
        match &result {
            Ok(_) => self.succeeded(probe),
            Err(e) => {
                bump(&stats.redis_errors);
                self.warn(what, e);
                // Redis answering with an error is not an outage.
                if is_outage(e) {
                    self.failed(probe);
                } else {
                    self.succeeded(probe);
                }
            }
        }
        result
    }

    fn admit(&self) -> Admit {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Closed;
        }
        if self.now_ms() < until {
            return Admit::Rejected;
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::Rejected,
        }
    }

    fn succeeded(&self, probe: bool) {
        self.consecutive_failures.store(0, Ordering::Release);
        if probe || self.open_until_ms.load(Ordering::Acquire) != 0 {
            self.open_until_ms.store(0, Ordering::Release);
            self.probing.store(false, Ordering::Release);
            if probe {
                tracing::info!("redis answers again; cache resumes");
            }
        }
    }

    fn failed(&self, probe: bool) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if probe || failures >= self.threshold {
            let until = self.now_ms() + self.cooldown.as_millis() as u64;
            self.open_until_ms.store(until.max(1), Ordering::Release);
            self.probing.store(false, Ordering::Release);
        }
    }

    /// Logs Redis trouble at warn, at most once per [`WARN_EVERY`], counting what it skipped.
    fn warn(&self, what: &'static str, error: &Error) {
        let now = Instant::now();
        {
            let Ok(mut last) = self.last_warning.lock() else {
                return;
            };
            if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
                self.suppressed_warnings.fetch_add(1, Ordering::Relaxed);
                return;
            }
            *last = Some(now);
        }
        let suppressed = self.suppressed_warnings.swap(0, Ordering::Relaxed);
        let detail = match error {
            Error::Redis(e) => e.to_string(),
            other => other.to_string(),
        };
        tracing::warn!(
            operation = what,
            error = %detail,
            suppressed,
            "redis trouble; falling back to the loader"
        );
    }
}

enum Admit {
    Closed,
    Probe,
    Rejected,
}

/// Whether an error means Redis is not reachable, as opposed to Redis answering with an error.
fn is_outage(e: &Error) -> bool {
    match e {
        Error::Timeout(_) | Error::Unavailable => true,
        Error::Redis(e) => {
            e.is_io_error()
                || e.is_connection_refusal()
                || e.is_connection_dropped()
                || e.is_timeout()
                || e.is_unrecoverable_error()
                || matches!(
                    e.kind(),
                    redis::ErrorKind::Server(
                        redis::ServerErrorKind::BusyLoading
                            | redis::ServerErrorKind::ClusterDown
                            | redis::ServerErrorKind::TryAgain
                    )
                )
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error() -> redis::RedisError {
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()
    }

    #[tokio::test]
    async fn breaker_opens_after_threshold_and_probes_after_cooldown() {
        let guard = Guard::new(Duration::from_millis(50), 3, Duration::from_millis(40));
        let stats = Counters::default();
        for _ in 0..3 {
            let r: Result<(), _> = guard.call(&stats, "t", async { Err(io_error()) }).await;
            assert!(matches!(r, Err(Error::Redis(_))));
        }
        assert!(guard.is_open());
        let mut ran = false;
        let r = guard
            .call(&stats, "t", async {
                ran = true;
                Ok(())
            })
            .await;
        assert!(
            matches!(r, Err(Error::Unavailable)) && !ran,
            "open breaker skips calls"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        guard
            .call(&stats, "t", async { Ok(()) })
            .await
            .expect("the probe goes through");
        assert!(!guard.is_open(), "a successful probe closes the breaker");
        assert_eq!(stats.snapshot().redis_errors, 3);
    }

    #[tokio::test]
    async fn timeouts_count_as_failures_and_server_errors_do_not() {
        let guard = Guard::new(Duration::from_millis(5), 2, Duration::from_secs(60));
        let stats = Counters::default();
        let answered: redis::RedisError = (
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "WRONGTYPE",
        )
            .into();
        for _ in 0..3 {
            let _ = guard
                .call(&stats, "t", async { Err::<(), _>(answered.clone()) })
                .await;
        }
        assert!(!guard.is_open());
        for _ in 0..2 {
            let r = guard
                .call(
                    &stats,
                    "t",
                    std::future::pending::<redis::RedisResult<()>>(),
                )
                .await;
            assert!(matches!(r, Err(Error::Timeout(_))));
        }
        assert!(guard.is_open());
    }
}
