//! Which request a call starts with.
//!
//! A call reads the entry (`GET`) and, on a miss, sends the lease script, which reads the
//! entry again before it takes the lease: a miss waits for two round trips. For a function
//! whose calls nearly all miss (a walk over cold ids, a batch job, a cache just flushed) the
//! `GET` is a round trip wasted, so such a call starts with the lease script: it answers with
//! the value where there is one, and takes the lease where there is not. A miss then waits for
//! one round trip.
//!
//! The script costs Redis far more than a `GET` does (about 5 µs against 0.2 on the
//! benchmark's machine), so a call starts with it only while nearly all of its function's
//! recent calls missed, where the `GET`s it saves cost Redis about what the scripts do. Each
//! function has a score: a miss raises it by one, a hit lowers it by [`HIT_LOWERS`]; calls
//! start with the script while it is at least [`LEADS_FROM`], so a function keeps it only
//! while over nine calls in ten miss. A hit on a function whose score is zero writes nothing.
//!
//! The scores are kept per cache, in [`SLOTS`] slots picked by the function's name: functions
//! sharing a slot share a score. That only decides which request goes first, never what a
//! call is answered: the lease script gives the same value a `GET` would, and a found value
//! is shared with the callers waiting in this process as a miss's is.
//!
//! Only a policy whose hit needs nothing but the value takes part: not one with `near`,
//! `stale`, early refresh, `fail_safe` or per-entry windows, whose hit also reads the entry's
//! remaining time or its metadata.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use crate::read::get::{Missed, Read, WindowsOf};
use crate::{Cache, CacheValue, Policy};

/// How many scores a cache keeps.
const SLOTS: usize = 64;
/// The highest score.
const CEILING: u8 = 64;
/// From which score calls start with the lease script.
const LEADS_FROM: u8 = 32;
/// How much a hit lowers a score.
const HIT_LOWERS: u8 = 9;

pub(crate) struct FirstReads {
    scores: [AtomicU8; SLOTS],
}

impl FirstReads {
    pub(crate) fn new() -> FirstReads {
        FirstReads {
            scores: std::array::from_fn(|_| AtomicU8::new(0)),
        }
    }

    /// The score of `policy`'s function, if its calls take part: picked by where its name
    /// lives (a literal, for the attribute and for `Policy::new("..")`), hashed so that
    /// neighbouring names spread.
    #[inline]
    pub(crate) fn of(&self, policy: &Policy) -> Option<Score<'_>> {
        if !policy.reads_value_only() {
            return None;
        }
        let at = policy.name().as_ptr() as u64;
        let slot = at.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros());
        Some(Score(&self.scores[slot as usize]))
    }

    /// A call of `policy` found a value.
    pub(crate) fn hit(&self, policy: &Policy) {
        if let Some(score) = self.of(policy) {
            score.hit();
        }
    }

    /// A call of `policy` found no value.
    pub(crate) fn miss(&self, policy: &Policy) {
        if let Some(score) = self.of(policy) {
            score.miss();
        }
    }

    /// Redis did not take a call's lease script: `policy`'s calls start with a `GET` again.
    pub(crate) fn reset(&self, policy: &Policy) {
        if let Some(score) = self.of(policy) {
            score.0.store(0, Relaxed);
        }
    }
}

/// One function's score.
#[derive(Clone, Copy)]
pub(crate) struct Score<'a>(&'a AtomicU8);

impl Score<'_> {
    /// Whether a call starts with the lease script rather than a `GET`.
    #[inline]
    fn lease_first(self) -> bool {
        self.0.load(Relaxed) >= LEADS_FROM
    }

    /// A call found a value: a score at zero is not written.
    #[inline]
    pub(crate) fn hit(self) {
        let now = self.0.load(Relaxed);
        if now > 0 {
            self.0.store(now.saturating_sub(HIT_LOWERS), Relaxed);
        }
    }

    fn miss(self) {
        let now = self.0.load(Relaxed);
        if now < CEILING {
            self.0.store(now + 1, Relaxed);
        }
    }
}

impl Cache {
    /// A call's first request: none where Redis is not to be asked (a write-back of the key
    /// Redis did not answer; the breaker would refuse the GET, so it is not built; an
    /// invalidation Redis did not take is pending for the key, so what Redis holds is stale),
    /// none yet for a function whose calls start with the lease script (`score`), else the
    /// GET (`near`: with the hit's expiry).
    pub(super) async fn first_read<T: CacheValue>(
        &self,
        value_key: &str,
        policy: &Policy,
        (score, near): (Option<Score<'_>>, bool),
        windows: WindowsOf<T>,
    ) -> Read<T> {
        let inner = &self.inner;
        let bound = inner.guard.op_timeout();
        let write_failed = !inner.write_backs.answered(value_key, bound).await;
        if write_failed || inner.guard.is_open() || inner.pending.covers(value_key) {
            Read::Missed(Missed::Unavailable)
        } else if score.is_some_and(|s| s.lease_first()) && !inner.guard.writes_open() {
            Read::Missed(Missed::Unread)
        } else {
            self.read::<T>(value_key, policy, near, windows).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> Policy {
        Policy::new("first-read", Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn starts_with_the_lease_script_only_while_nearly_every_call_misses() {
        let (reads, policy) = (FirstReads::new(), policy());
        let lease_first = |reads: &FirstReads| reads.of(&policy).unwrap().lease_first();
        assert!(!lease_first(&reads), "a new function reads first");
        for _ in 0..LEADS_FROM {
            reads.miss(&policy);
        }
        assert!(lease_first(&reads));
        // Nine misses in ten keep it; eight in ten do not.
        for _ in 0..50 {
            (0..9).for_each(|_| reads.miss(&policy));
            reads.hit(&policy);
        }
        assert!(lease_first(&reads));
        for _ in 0..50 {
            (0..8).for_each(|_| reads.miss(&policy));
            (0..2).for_each(|_| reads.hit(&policy));
        }
        assert!(!lease_first(&reads));
    }

    #[test]
    fn policies_whose_hits_read_more_than_the_value_never_take_part() {
        let reads = FirstReads::new();
        let stale = policy().with_stale(Duration::from_secs(5)).unwrap();
        let near = policy().with_near(Duration::from_secs(5)).unwrap();
        for policy in [stale, near] {
            (0..100).for_each(|_| reads.miss(&policy));
            assert!(reads.of(&policy).is_none());
        }
    }
}
