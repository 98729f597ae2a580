//! The policy of a cached function, built from the attribute's arguments: at compile time, or
//! at the first call when its `ttl` is an expression.

use core::time::Duration;

use crate::policy::Freshness;
use crate::{Codec, Compression, Error, Jitter, Policy};

/// `fail_safe` and its `back_off`.
type FailSafe = (Option<Duration>, Option<Duration>);

/// The policy of a cached function, from values the attribute checked at compile time.
pub const fn policy(
    name: &'static str,
    ttl: Duration,
    jitter: Jitter,
    (lock_ttl, max_load): (Option<Duration>, Option<Duration>),
    none_ttl: Option<Duration>,
    // `near`, `stale`, early refresh's β in millionths, and `fail_safe` with its `back_off`:
    // what a hit does besides reading.
    (near, stale, early, (fail_safe, back_off)): (
        Option<Duration>,
        Option<Duration>,
        Option<u32>,
        FailSafe,
    ),
    format: (Option<Codec>, Option<Compression>),
) -> Policy {
    Policy {
        name,
        ttl,
        jitter,
        lock_ttl,
        none_ttl,
        max_load,
        near,
        codec: format.0,
        compression: format.1,
        freshness: Freshness {
            stale,
            early,
            fail_safe,
            back_off,
            per_entry: crate::policy::PerEntry::No,
        },
    }
}

/// The policy of a function with `ttl = EXPR`: `policy` with the TTL computed at its first call,
/// checked as [`Policy::new`] and [`Policy::with_jitter`] check theirs.
pub fn policy_at_run_time(policy: Policy, ttl: Duration) -> Result<Policy, Error> {
    let checked = Policy::new(policy.name, ttl)?.with_jitter(policy.jitter)?;
    Ok(Policy {
        ttl: checked.ttl,
        ..policy
    })
}

/// The policy built at the first call, or `None` with its error logged (once): the loader then
/// answers every call, uncached.
pub fn checked_policy(policy: &'static Result<Policy, Error>) -> Option<&'static Policy> {
    match policy {
        Ok(policy) => Some(policy),
        Err(error) => {
            static LOGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
            let text = error.to_string();
            let mut logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
            if !logged.contains(&text) {
                tracing::error!(%error, "a cached function's `ttl` is invalid: running it uncached");
                logged.push(text);
            }
            None
        }
    }
}
