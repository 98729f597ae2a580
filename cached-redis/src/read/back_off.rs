//! The keys backed off after a `fail_safe` answer: for their policy's `back_off` their calls are
//! answered with the expired entry without loading, so a database that fails is not asked again
//! by every caller; and the rate limit of the warning that reports such answers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Policy;
use crate::keyed::KeyMap;
use crate::rate_limit::RateLimit;

/// Past this many keys backed off at once, the expired ones are dropped.
const PRUNE_ABOVE: usize = 10_000;

/// How often a fail-safe answer is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// The keys backed off after a fail-safe answer, and the warning's rate limit.
pub(crate) struct BackOff {
    until: Mutex<KeyMap<Instant>>,
    warnings: RateLimit,
}

impl Default for BackOff {
    fn default() -> BackOff {
        BackOff {
            until: Mutex::default(),
            warnings: RateLimit::new(WARN_EVERY),
        }
    }
}

impl BackOff {
    /// Whether `key`'s loads are backed off now.
    pub(crate) fn holds(&self, key: &str) -> bool {
        let until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        until.get(key).is_some_and(|until| Instant::now() < *until)
    }

    /// Backs `key` off for its `policy`'s `back_off`, and logs the answer (at most once per
    /// [`WARN_EVERY`]).
    pub(crate) fn start(&self, key: &str, policy: &Policy) {
        let (function, back_off) = (policy.name(), policy.back_off());
        let now = Instant::now();
        {
            let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
            if until.len() > PRUNE_ABOVE {
                until.retain(|_, until| now < *until);
            }
            until.insert(key.to_owned(), now + back_off);
        }
        let Some(suppressed) = self.warnings.allow() else {
            return;
        };
        tracing::warn!(
            key,
            function,
            suppressed,
            "a load failed; answered with the entry past its TTL (fail_safe)"
        );
    }
}
