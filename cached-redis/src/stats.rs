//! Counters of what the cache did, and their snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a [`Cache`](crate::Cache)'s counters since it was built (or last reset).
///
/// ```no_run
/// # async fn demo(cache: cached_redis::Cache) {
/// let stats = cache.stats();
/// println!("hit ratio {:.2}", stats.hits as f64 / (stats.hits + stats.misses).max(1) as f64);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls answered from Redis.
    pub hits: u64,
    /// Calls that found no usable value in Redis.
    pub misses: u64,
    /// Loader runs.
    pub loads: u64,
    /// Loader runs whose result was not cached as a failure (`Err`).
    pub load_errors: u64,
    /// Callers that joined a load already running in this process instead of starting one.
    pub coalesced: u64,
    /// Times a caller waited for another process's lease instead of loading.
    pub lock_waits: u64,
    /// Loads whose write-back was refused because an invalidation revoked their lease.
    pub stale_refused: u64,
    /// Stored values that did not decode and were treated as a miss.
    pub decode_errors: u64,
    /// Calls answered with an entry past its TTL, within the function's `stale`, while
    /// another caller refreshed it (not counted in `hits`).
    pub stale_served: u64,
    /// Refreshes of an entry past its TTL (`stale`) or drawn early (`refresh = "early"`)
    /// that took the lease; each is also a load.
    pub refreshes: u64,
    /// Calls answered with an entry past its TTL, within `fail_safe`, in place of a failed
    /// load's error, or without loading while its key was backed off after one.
    pub fail_safe_served: u64,
    /// Redis calls that failed or timed out.
    pub redis_errors: u64,
    /// Calls that ran the loader without the cache because Redis was unavailable (the GET
    /// failed, or it was answered and the lease script was not).
    pub fallbacks: u64,
    /// Loads that ran without a lease because Redis answered reads but refused writes (`OOM`
    /// at `maxmemory` under `noeviction`, `READONLY` from a demoted primary, `NOREPLICAS`,
    /// `MISCONF`). Their values are not stored.
    pub writes_refused: u64,
    /// Calls answered from this process's near cache, without asking Redis (not counted in
    /// `hits`).
    pub near_hits: u64,
    /// Values held in the near cache now.
    pub near_entries: u64,
    /// Times every near copy was dropped at once: the tracking connection was lost, missed a
    /// heartbeat or reconnected, Redis was flushed, or a bulk invalidation ran.
    pub near_flushes: u64,
    /// Values read from Redis and not kept near, because an invalidation of their key (or a
    /// key sharing its stripe) was applied while the read was in flight.
    pub near_rejected: u64,
    /// Invalidations (of a key, or of many: a family, a prefix, everything) that Redis did not
    /// take and that wait to be replayed now. This process does not read their entries from
    /// Redis meanwhile.
    pub invalidations_pending: u64,
    /// Pending invalidations that Redis has taken since.
    pub invalidations_replayed: u64,
    /// Pending invalidations folded into one removal of the whole namespace, when more than
    /// 10,000 were pending at once.
    pub invalidations_dropped: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) load_errors: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) lock_waits: AtomicU64,
    pub(crate) stale_refused: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) fail_safe_served: AtomicU64,
    pub(crate) redis_errors: AtomicU64,
    pub(crate) fallbacks: AtomicU64,
    pub(crate) writes_refused: AtomicU64,
}

/// Adds one to a counter.
fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What happened in a cached call, counted in [`Stats`] and, with the `metrics` feature, as a
/// `cached_redis_<event>_total` counter labelled with the function, named as the [`Stats`]
/// field it counts in (`coalesced` is `cached_redis_coalesced_total`). A call can see several
/// (a miss, then a load); its [`Outcome`] is the one answer it got.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Hit,
    Miss,
    Load,
    LoadError,
    Coalesced,
    LockWait,
    StaleRefused,
    Fallback,
    WritesRefused,
    DecodeError,
    StaleServed,
    Refresh,
    FailSafe,
}

/// How a call was answered: recorded on its span (`outcome`) and, with the `metrics` feature,
/// counted as `cached_redis_calls_total` labelled with the function and the outcome. The
/// events of the same call agree with it: a `Fallback` call counted a fallback, a
/// `WritesRefused` one a refused write, a `StaleRefused` one a refused write-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A copy in this process's memory answered.
    NearHit,
    Hit,
    /// This caller ran the loader with Redis answering: under the lease (and stored the
    /// value, or tried to), or on its own after the load it joined failed.
    Miss,
    /// Another caller's load answered: a local join or a wait on another process's lease.
    Waited,
    /// Redis was unavailable; the loader answered.
    Fallback,
    /// Redis answered reads but refused writes; the loader answered, nothing was stored.
    WritesRefused,
    /// This caller's load was revoked by an invalidation and not stored: an in-memory cache's
    /// call. On Redis the write-back's verdict comes after its caller is answered (a `Miss`),
    /// and is counted in the `stale_refused` stat only.
    StaleRefused,
    /// The cache is disabled; the loader answered.
    Disabled,
    /// An entry past its TTL answered (within `stale`) while another caller refreshed it.
    Stale,
    /// This caller refreshed an entry past its TTL or drawn early, under the lease.
    Refreshed,
    /// An entry past its TTL (within `fail_safe`) answered in place of a load's error.
    FailSafe,
}

impl Outcome {
    /// A load this caller ran, with Redis answering or (unavailable) not.
    pub(crate) fn of_load(leased: bool) -> Outcome {
        if leased {
            Outcome::Miss
        } else {
            Outcome::Fallback
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::NearHit => "near-hit",
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Waited => "waited",
            Outcome::Fallback => "fallback",
            Outcome::WritesRefused => "writes-refused",
            Outcome::StaleRefused => "stale-refused",
            Outcome::Disabled => "disabled",
            Outcome::Stale => "stale",
            Outcome::Refreshed => "refreshed",
            Outcome::FailSafe => "fail-safe",
        }
    }
}

impl Counters {
    /// Counts `event` for `function`.
    pub(crate) fn note(&self, event: Event, function: &'static str) {
        let (counter, _metric) = match event {
            Event::Hit => (&self.hits, "cached_redis_hits_total"),
            Event::Miss => (&self.misses, "cached_redis_misses_total"),
            Event::Load => (&self.loads, "cached_redis_loads_total"),
            Event::LoadError => (&self.load_errors, "cached_redis_load_errors_total"),
            Event::Coalesced => (&self.coalesced, "cached_redis_coalesced_total"),
            Event::LockWait => (&self.lock_waits, "cached_redis_lock_waits_total"),
            Event::StaleRefused => (&self.stale_refused, "cached_redis_stale_refused_total"),
            Event::Fallback => (&self.fallbacks, "cached_redis_fallbacks_total"),
            Event::WritesRefused => (&self.writes_refused, "cached_redis_writes_refused_total"),
            Event::DecodeError => (&self.decode_errors, "cached_redis_decode_errors_total"),
            Event::StaleServed => (&self.stale_served, "cached_redis_stale_served_total"),
            Event::Refresh => (&self.refreshes, "cached_redis_refreshes_total"),
            Event::FailSafe => (
                &self.fail_safe_served,
                "cached_redis_fail_safe_served_total",
            ),
        };
        bump(counter);
        #[cfg(feature = "metrics")]
        metrics::counter!(_metric, "function" => function).increment(1);
        let _ = function;
    }

    /// Counts `event` for `function` if `happened`.
    pub(crate) fn note_if(&self, happened: bool, event: Event, function: &'static str) {
        if happened {
            self.note(event, function);
        }
    }

    /// Counts a near hit's call with `metrics` (`cached_redis_near_hits_total` and the call's
    /// outcome); the count in [`Stats`] is the near cache's own, which threads do not
    /// contend on.
    pub(crate) fn note_near_hit(&self, function: &'static str) {
        #[cfg(feature = "metrics")]
        metrics::counter!("cached_redis_near_hits_total", "function" => function).increment(1);
        self.note_call(Outcome::NearHit, function);
    }

    /// Counts a call's outcome (`cached_redis_calls_total` with `metrics`).
    pub(crate) fn note_call(&self, outcome: Outcome, function: &'static str) {
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "cached_redis_calls_total",
            "function" => function,
            "outcome" => outcome.as_str()
        )
        .increment(1);
        let _ = (outcome, function);
    }

    /// Counts a failed or timed-out Redis call (`cached_redis_redis_errors_total`, labelled
    /// with the operation, with `metrics`).
    pub(crate) fn note_redis_error(&self, operation: &'static str) {
        bump(&self.redis_errors);
        #[cfg(feature = "metrics")]
        metrics::counter!("cached_redis_redis_errors_total", "operation" => operation).increment(1);
        let _ = operation;
    }

    /// Records how long a load took (`cached_redis_load_duration_seconds` with `metrics`).
    pub(crate) fn note_load_time(&self, function: &'static str, took: std::time::Duration) {
        #[cfg(feature = "metrics")]
        metrics::histogram!("cached_redis_load_duration_seconds", "function" => function)
            .record(took.as_secs_f64());
        let _ = (function, took);
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            hits: get(&self.hits),
            misses: get(&self.misses),
            loads: get(&self.loads),
            load_errors: get(&self.load_errors),
            coalesced: get(&self.coalesced),
            lock_waits: get(&self.lock_waits),
            stale_refused: get(&self.stale_refused),
            decode_errors: get(&self.decode_errors),
            stale_served: get(&self.stale_served),
            refreshes: get(&self.refreshes),
            fail_safe_served: get(&self.fail_safe_served),
            redis_errors: get(&self.redis_errors),
            fallbacks: get(&self.fallbacks),
            writes_refused: get(&self.writes_refused),
            ..Stats::default()
        }
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.hits,
            &self.misses,
            &self.loads,
            &self.load_errors,
            &self.coalesced,
            &self.lock_waits,
            &self.stale_refused,
            &self.decode_errors,
            &self.stale_served,
            &self.refreshes,
            &self.fail_safe_served,
            &self.redis_errors,
            &self.fallbacks,
            &self.writes_refused,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}
