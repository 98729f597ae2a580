//! The fail-open guard around every Redis call: a timeout, three circuit breakers (one for
//! reads, one for writes, one for replica confirmations) and rate-limited warnings.
//!
//! Timeouts, refused or dropped connections count as outages for the call's [`Breaker`].
//! Errors Redis *answers* with (a wrong type, say) are not outages and do not count.

use std::future::Future;
use std::time::Duration;

use crate::Error;
use crate::conn::breaker::Breaker;
use crate::conn::timer_anchor::TimerAnchor;
use crate::rate_limit::RateLimit;
use crate::stats::Counters;

#[derive(Debug)]
pub(crate) struct Guard {
    op_timeout: Duration,
    reads: Breaker,
    writes: Breaker,
    /// Replica confirmations (`WAIT`, `invalidate_replicas`): their connections' trouble is
    /// their own, and must not stop the leases that share the write breaker.
    confirms: Breaker,
    warnings: RateLimit,
    /// Keeps each call's timeout from waking the runtime's timer driver.
    anchor: TimerAnchor,
}

/// The interval between two warnings about Redis trouble.
const WARN_EVERY: Duration = Duration::from_secs(5);

impl Guard {
    pub(crate) fn new(op_timeout: Duration, threshold: u32, cooldown: Duration) -> Guard {
        Guard {
            op_timeout,
            reads: Breaker::new(threshold, cooldown),
            writes: Breaker::new(threshold, cooldown),
            confirms: Breaker::new(threshold, cooldown),
            warnings: RateLimit::new(WARN_EVERY),
            anchor: TimerAnchor::new(op_timeout),
        }
    }

    pub(crate) fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// Whether the read breaker is open right now (without claiming a probe).
    /// Whether reads are being skipped right now: a caller can skip building one.
    pub(crate) fn is_open(&self) -> bool {
        self.reads.is_open()
    }

    /// Whether writes are being skipped right now.
    pub(crate) fn writes_open(&self) -> bool {
        self.writes.is_open()
    }

    /// Runs a Redis call that only reads (a GET, a SCAN, a PING) under the timeout and the
    /// read breaker.
    ///
    /// This and the other ways in return [`Guard::through`]'s future itself rather than an
    /// `async fn` of their own around it: each such layer would keep its own copy of `op`
    /// beside the one it awaits, and a miss's future, which is moved into a box, holds
    /// several of them.
    pub(crate) fn read<T>(
        &self,
        stats: &Counters,
        what: &'static str,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> impl Future<Output = Result<T, Error>> {
        self.through(Some(&self.reads), self.op_timeout, stats, what, op)
    }

    /// Runs a Redis call that writes (a lease script, an invalidation) under the timeout and
    /// the write breaker. Writes have a breaker of their own because Redis can stop them
    /// alone: a failover's `CLIENT PAUSE ... WRITE` holds every write for seconds while reads
    /// are served, and that must not stop hits.
    pub(crate) fn write<T>(
        &self,
        stats: &Counters,
        what: &'static str,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> impl Future<Output = Result<T, Error>> {
        self.write_within(stats, what, self.op_timeout, op)
    }

    /// [`Guard::write`] within `bound` rather than `op_timeout`.
    pub(crate) fn write_within<T>(
        &self,
        stats: &Counters,
        what: &'static str,
        bound: Duration,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> impl Future<Output = Result<T, Error>> {
        self.through(Some(&self.writes), bound, stats, what, op)
    }

    /// A replica confirmation (writes followed by `WAIT`, which Redis holds for up to
    /// `extra` on purpose) under `op_timeout + extra` and a breaker of its own: a confirmation
    /// connection that black-holes fails the confirmations, not the write-backs of loads.
    pub(crate) fn confirm_within<T>(
        &self,
        stats: &Counters,
        what: &'static str,
        extra: Duration,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> impl Future<Output = Result<T, Error>> {
        let bound = self.op_timeout.saturating_add(extra);
        self.through(Some(&self.confirms), bound, stats, what, op)
    }

    /// Runs one Redis call under the timeout, counting and warning about failures, outside the
    /// breaker: for the subscriber connection, whose trouble must not stop the cache.
    pub(crate) fn bounded<T>(
        &self,
        stats: &Counters,
        what: &'static str,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> impl Future<Output = Result<T, Error>> {
        self.through(None, self.op_timeout, stats, what, op)
    }

    /// Runs one Redis call under `bound`, through `breaker` if there is one (skipped while it
    /// is open), counting and warning about failures.
    async fn through<T>(
        &self,
        breaker: Option<&Breaker>,
        bound: Duration,
        stats: &Counters,
        what: &'static str,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Error> {
        let pass = match breaker.map(Breaker::admit) {
            Some(None) => return Err(Error::Unavailable),
            Some(Some(pass)) => Some(pass),
            None => None,
        };
        self.anchor.touch();
        let result = match tokio::time::timeout(bound, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Redis(e)),
            Err(_) => Err(Error::Timeout(bound)),
        };
        if let Err(e) = &result {
            self.note_failure(stats, what, e);
        }
        match (pass, &result) {
            // Redis answering with an error is not an outage.
            (Some(pass), Err(e)) if is_outage(e) => pass.failed(),
            (Some(pass), _) => pass.succeeded(),
            (None, _) => {}
        }
        result
    }

    /// Counts a failed Redis call and logs it (see [`Guard::warn`]): for calls made outside
    /// [`Guard::through`], such as a lease's give-back, which waits for its answer.
    pub(crate) fn note_failure(&self, stats: &Counters, what: &'static str, error: &Error) {
        stats.note_redis_error(what);
        self.warn(what, error);
    }

    /// Logs Redis trouble at warn, at most once per [`WARN_EVERY`], counting what it skipped.
    fn warn(&self, what: &'static str, error: &Error) {
        let Some(suppressed) = self.warnings.allow() else {
            return;
        };
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

/// Whether Redis answered that it refuses writes for now while it still serves reads: `OOM`
/// (at `maxmemory` under `noeviction`), `READONLY` (a demoted primary), `NOREPLICAS`
/// (`min-replicas-to-write` unmet), `MISCONF` (a failed snapshot stops writes).
/// Redis 7 passes a script's error code through; older servers wrap it in the message
/// (`ERR Error running script ... -OOM command not allowed ...`), so the text counts too.
pub(crate) fn refuses_writes(e: &Error) -> bool {
    const CODES: [&str; 4] = ["OOM", "READONLY", "NOREPLICAS", "MISCONF"];
    let Error::Redis(e) = e else {
        return false;
    };
    if e.code().is_some_and(|code| CODES.contains(&code)) {
        return true;
    }
    let text = e.to_string();
    CODES.iter().any(|code| {
        text.contains(&format!("-{code} ")) || text.contains(&format!("{code} command not allowed"))
    })
}

/// Whether an error means Redis is not reachable, as opposed to Redis answering with an error.
pub(crate) fn is_outage(e: &Error) -> bool {
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

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_after_threshold_and_probes_after_cooldown() {
        let guard = Guard::new(Duration::from_millis(50), 3, Duration::from_millis(40));
        let stats = Counters::default();
        for _ in 0..3 {
            let r: Result<(), _> = guard.read(&stats, "t", async { Err(io_error()) }).await;
            assert!(matches!(r, Err(Error::Redis(_))));
        }
        assert!(guard.is_open());
        let mut ran = false;
        let r = guard
            .read(&stats, "t", async {
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
            .read(&stats, "t", async { Ok(()) })
            .await
            .expect("the probe goes through");
        assert!(!guard.is_open(), "a successful probe closes the breaker");
        assert_eq!(stats.snapshot().redis_errors, 3);
    }

    #[tokio::test(start_paused = true)]
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
                .read(&stats, "t", async { Err::<(), _>(answered.clone()) })
                .await;
        }
        assert!(!guard.is_open());
        for _ in 0..2 {
            let r = guard
                .read(
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
