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
//! The scores are kept per cache, in [`SLOTS`] slots picked by a hash of where the function's
//! name lives. A slot belongs to the function that last raised it from zero, marked with 8
//! more bits of that hash: another function whose name falls on it counts nothing there and
//! starts with a `GET`, so a function whose calls hit is never made to start with the script
//! by one whose calls miss. Two functions share a score only when their slot and mark both
//! match (about one pair in 65,000). A score only decides which request goes first, never what
//! a call is answered: the lease script gives the same value a `GET` would, and a value it
//! found is shared with the callers waiting in this process as a miss's is.
//!
//! Only a policy whose hit needs nothing but the value takes part: not one with `near`,
//! `stale`, early refresh, `fail_safe` or per-entry windows, whose hit also reads the entry's
//! remaining time or its metadata.

use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
use std::time::Instant;

use crate::lease::EntryKeys;
use crate::read::get::{Missed, Read, Refresh, WindowsOf};
use crate::read::wait::Lease;
use crate::stats::Event;
use crate::{Cache, CacheValue, Policy};

/// How many scores a cache keeps.
const SLOTS: usize = 256;
/// The highest score.
const CEILING: u8 = 64;
/// From which score calls start with the lease script.
const LEADS_FROM: u8 = 32;
/// How much a hit lowers a score.
const HIT_LOWERS: u8 = 9;

/// Per slot: the mark of the function it belongs to (high byte; zero: none) and its score.
pub(crate) struct FirstReads {
    scores: [AtomicU16; SLOTS],
}

impl FirstReads {
    pub(crate) fn new() -> FirstReads {
        FirstReads {
            scores: std::array::from_fn(|_| AtomicU16::new(0)),
        }
    }

    /// The score of `policy`'s function, if its calls take part: the slot and mark picked by
    /// where its name lives (a literal, for the attribute and for `Policy::new("..")`), hashed
    /// so that neighbouring names spread.
    #[inline]
    pub(crate) fn of(&self, policy: &Policy) -> Option<Score<'_>> {
        if !policy.reads_value_only() {
            return None;
        }
        let hash = (policy.name().as_ptr() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let slot = (hash >> 56) as usize % SLOTS;
        let mark = ((hash >> 48) as u8).max(1);
        Some(Score {
            cell: &self.scores[slot],
            mark,
        })
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

    /// Redis did not take a call's lease script: `policy`'s calls start with a `GET` again
    /// (the slot is left alone if another function's calls took it meanwhile).
    pub(crate) fn reset(&self, policy: &Policy) {
        if let Some(score) = self.of(policy).filter(|score| score.get().is_some()) {
            score.set(0);
        }
    }
}

/// One function's score: its slot, and its mark there.
#[derive(Clone, Copy)]
pub(crate) struct Score<'a> {
    cell: &'a AtomicU16,
    mark: u8,
}

impl Score<'_> {
    /// This function's score, `None` while the slot belongs to another.
    #[inline]
    fn get(self) -> Option<u8> {
        let [mark, score] = self.cell.load(Relaxed).to_be_bytes();
        (mark == self.mark || mark == 0).then_some(score)
    }

    /// Sets this function's score; at zero the slot belongs to no function.
    fn set(self, score: u8) {
        let mark = if score == 0 { 0 } else { self.mark };
        self.cell.store(u16::from_be_bytes([mark, score]), Relaxed);
    }

    /// Whether a call starts with the lease script rather than a `GET`.
    #[inline]
    fn lease_first(self) -> bool {
        self.get().is_some_and(|score| score >= LEADS_FROM)
    }

    /// A call found a value: a score at zero is not written.
    #[inline]
    pub(crate) fn hit(self) {
        if let Some(score @ 1..) = self.get() {
            self.set(score.saturating_sub(HIT_LOWERS));
        }
    }

    fn miss(self) {
        if let Some(score) = self.get().filter(|&score| score < CEILING) {
            self.set(score + 1);
        }
    }
}

impl Cache {
    /// Counts a call that found no value in Redis.
    pub(super) fn note_miss(&self, policy: &Policy) {
        self.inner.stats.note(Event::Miss, policy.name());
        self.inner.first_reads.miss(policy);
        tracing::debug!("cache miss");
    }

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

    /// Counts a call that started with the lease script (`sent` then, within half of
    /// `op_timeout`) by the script's answer: a hit if it found a value, a miss if it took the
    /// lease or waited for another process's load. Where Redis did not take the script
    /// (writes refused, paused, or Redis black-holed), the function's calls start with a `GET`
    /// again, and this one reads the entry as they do, within what is left of its
    /// `op_timeout`: `Err` with the value it found. Unanswered, it loads without Redis, as a
    /// call whose `GET` was not answered does.
    pub(super) async fn first_read_answered<T: CacheValue>(
        &self,
        keys: &EntryKeys,
        policy: &Policy,
        lease: Lease<T>,
        sent: Instant,
    ) -> Result<Lease<T>, T> {
        let inner = &self.inner;
        match &lease {
            Lease::Value(..) => {
                inner.stats.note(Event::Hit, policy.name());
                inner.first_reads.hit(policy);
            }
            Lease::Held(_) | Lease::Waited(..) => self.note_miss(policy),
            Lease::Unavailable | Lease::WritesRefused => {
                inner.first_reads.reset(policy);
                let left = inner.guard.op_timeout().saturating_sub(sent.elapsed());
                let read = self.read::<T>(&keys.value, policy, false, |_| None);
                let read = match left.is_zero() {
                    true => None,
                    false => tokio::time::timeout(left, read).await.ok(),
                };
                match read {
                    Some(Read::Hit(value, _) | Read::Due(Refresh { value, .. })) => {
                        inner.stats.note(Event::Hit, policy.name());
                        return Err(value);
                    }
                    Some(Read::Missed(Missed::Absent { .. })) => self.note_miss(policy),
                    _ => {}
                }
                if matches!(lease, Lease::Unavailable) {
                    inner.stats.note(Event::Fallback, policy.name());
                }
            }
        }
        Ok(lease)
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
    fn a_function_whose_slot_another_holds_starts_with_a_get_and_changes_nothing() {
        let reads = FirstReads::new();
        let (cold, hot) = (policy(), policy());
        let (cold, hot) = (reads.of(&cold).unwrap(), reads.of(&hot).unwrap());
        // Two functions on one slot, told apart by their marks.
        let other = Score {
            cell: hot.cell,
            mark: hot.mark.wrapping_add(1).max(1),
        };
        (0..LEADS_FROM).for_each(|_| cold.miss());
        assert!(cold.lease_first());
        assert!(!other.lease_first(), "the slot is not its");
        other.miss();
        other.hit();
        assert!(cold.lease_first(), "its calls changed nothing");
        // Once the first function's calls hit, the slot is free for the other.
        (0..4).for_each(|_| cold.hit());
        (0..LEADS_FROM).for_each(|_| other.miss());
        assert!(other.lease_first());
        assert!(!cold.lease_first());
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
