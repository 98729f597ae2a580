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
//! function has a score ([`score`](super::score)): a miss raises it by one, a hit lowers it
//! by nine; calls start with the script while it is at least 32 of 64, so a function keeps it
//! only while over nine calls in ten miss. A hit on a function whose score is zero writes nothing.
//!
//! The scores are kept per cache, in 256 slots picked by a hash of where the function's
//! name lives. A slot belongs to the function that last raised it from zero, marked with 8
//! more bits of that hash: another function whose name falls on it counts nothing there and
//! starts with a `GET`, so a function whose calls hit is never made to start with the script
//! by one whose calls miss. Two functions share a score only when their slot and mark both
//! match (about one pair in 65,000). A score only decides which request goes first, never what
//! a call is answered: the lease script gives the same value a `GET` would, and a value it
//! found is shared with the callers waiting in this process as a miss's is.
//!
//! The script has half of `op_timeout`: refused or unanswered, the call reads with a `GET`
//! within the other half, and the function's calls start with a `GET` again. A call that
//! finds its key's load running in this process reads with a `GET` too, as a call that starts
//! with one does, so it is counted and shares that load on the same terms.
//!
//! Only a policy whose hit needs nothing but the value takes part: not one with `near`,
//! `stale`, early refresh, `fail_safe` or per-entry windows, whose hit also reads the entry's
//! remaining time or its metadata.

use std::time::Instant;

use crate::lease::EntryKeys;
use crate::read::get::{Missed, Read, Refresh};
use crate::read::score::Score;
use crate::read::wait::Lease;
use crate::stats::Event;
use crate::{Cache, CacheValue, Policy};

impl Cache {
    /// Counts a call that found no value in Redis.
    pub(super) fn note_miss(&self, policy: &Policy) {
        self.inner.stats.note(Event::Miss, policy.name());
        self.inner.first_reads.miss(policy);
        tracing::debug!("cache miss");
    }

    /// Why a call sends no GET first, if it does not: Redis is not to be asked (a write-back
    /// of the key Redis did not answer, `write_failed`; the breaker would refuse the GET, so
    /// it is not built; an invalidation Redis did not take is pending for the key, so what
    /// Redis holds is stale), or its function's calls start with the lease script (`score`).
    /// Not `async`: the hit's future stays as it was.
    #[inline]
    pub(super) fn no_get(
        &self,
        value_key: &str,
        score: Option<Score<'_>>,
        write_failed: bool,
    ) -> Option<Missed> {
        let inner = &self.inner;
        if write_failed || inner.guard.is_open() || inner.pending.covers(value_key) {
            Some(Missed::Unavailable)
        } else if score.is_some_and(|s| s.lease_first()) && !inner.guard.writes_open() {
            Some(Missed::Unread)
        } else {
            None
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
                let read = if left.is_zero() {
                    None
                } else {
                    tokio::time::timeout(left, read).await.ok()
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
