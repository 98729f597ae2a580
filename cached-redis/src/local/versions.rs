//! What a near copy is checked against: the flush epoch, one sequence number per stripe of
//! keys (bumped by every invalidation of a key in the stripe), and the newest moment up to
//! which every invalidation Redis sent is known to have been applied.
//!
//! A read captures a [`Ticket`] before its GET is sent; its reply is kept only if no
//! invalidation of its stripe, and no flush, was applied meanwhile. An invalidation applied
//! before the ticket was taken concerns a write the GET already sees; one applied after it
//! either rejects the insert (applied before) or removes the copy (applied after).

use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::Instant;

use super::clock::Clock;

/// Stripes of keys: enough that a write to one key seldom drops or rejects another key's copy
/// (128 KiB of counters).
const STRIPES: usize = 16_384;

pub(crate) struct Versions {
    /// Bumped by every flush: copies of an older epoch are never served.
    epoch: AtomicU64,
    /// Bumped when the tracking connection is lost: a confirmation from an older session is
    /// dropped.
    session: AtomicU64,
    stripes: Box<[AtomicU64]>,
    /// Nanoseconds on `clock` up to which every invalidation is applied; 0: not yet.
    confirmed: AtomicU64,
    clock: Clock,
}

/// What a read saw before it asked Redis.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    pub(crate) epoch: u64,
    stripe: usize,
    seq: u64,
}

impl Ticket {
    /// The ticket of a copy whose versions are kept elsewhere (the in-memory cache's entries):
    /// never compared.
    pub(crate) const UNVERSIONED: Ticket = Ticket {
        epoch: 0,
        stripe: 0,
        seq: 0,
    };
}

impl Versions {
    pub(crate) fn new() -> Versions {
        Versions {
            epoch: AtomicU64::new(0),
            session: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            confirmed: AtomicU64::new(0),
            clock: Clock::new(),
        }
    }

    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn ticket(&self, hash: u64) -> Ticket {
        let stripe = stripe_of(hash);
        Ticket {
            epoch: self.epoch.load(Ordering::SeqCst),
            stripe,
            seq: self.stripes[stripe].load(Ordering::SeqCst),
        }
    }

    /// Whether no invalidation of `ticket`'s stripe was applied since it was taken (flushes
    /// are checked by epoch, where a copy is served).
    #[inline]
    pub(crate) fn stripe_still(&self, ticket: Ticket) -> bool {
        self.stripes[ticket.stripe].load(Ordering::Acquire) == ticket.seq
    }

    /// Whether nothing that concerns `ticket`'s key was applied since it was taken.
    pub(crate) fn still(&self, ticket: Ticket) -> bool {
        fence(Ordering::SeqCst);
        self.epoch.load(Ordering::SeqCst) == ticket.epoch
            && self.stripes[ticket.stripe].load(Ordering::SeqCst) == ticket.seq
    }

    /// An invalidation of the key hashed to `hash`: reads in flight for its stripe keep
    /// nothing. Called before the copy is removed.
    pub(crate) fn invalidate(&self, hash: u64) {
        self.stripes[stripe_of(hash)].fetch_add(1, Ordering::SeqCst);
    }

    /// Every copy goes: copies of an older epoch are never served, and reads in flight keep
    /// nothing.
    pub(crate) fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The tracking connection is lost: every copy goes, and none is served until a new
    /// session confirms what it applied.
    pub(crate) fn lose(&self) {
        self.session.fetch_add(1, Ordering::SeqCst);
        self.confirmed.store(0, Ordering::SeqCst);
        self.flush();
    }

    pub(crate) fn session(&self) -> u64 {
        self.session.load(Ordering::SeqCst)
    }

    /// Every invalidation Redis sent before `at` has been applied, in `session` (a
    /// confirmation that a loss overtook is dropped).
    pub(crate) fn confirm(&self, session: u64, at: Instant) {
        let nanos = self.clock.at(at).max(1);
        self.confirmed.fetch_max(nanos, Ordering::SeqCst);
        if self.session.load(Ordering::SeqCst) != session {
            self.confirmed.store(0, Ordering::SeqCst);
        }
    }

    /// Whether every invalidation sent before `at` is known applied.
    pub(crate) fn confirmed_since(&self, at: Instant) -> bool {
        let confirmed = self.confirmed.load(Ordering::Acquire);
        confirmed != 0 && confirmed >= self.clock.at(at)
    }

    /// Whether, at `now` (as [`Versions::now`] reads it), every invalidation sent more than
    /// `lag_ns` nanoseconds ago is known applied.
    #[inline]
    pub(crate) fn confirmed_within(&self, now: u64, lag_ns: u64) -> bool {
        let confirmed = self.confirmed.load(Ordering::Acquire);
        confirmed != 0 && now.saturating_sub(confirmed) <= lag_ns
    }

    /// Now, as nanoseconds since these versions were made: the hit path's time checks
    /// compare against it as integers.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.clock.now()
    }

    /// `at` on the same scale as [`Versions::now`].
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        self.clock.at(at)
    }
}

fn stripe_of(hash: u64) -> usize {
    (hash as usize) % STRIPES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::clock;
    use std::time::Duration;

    #[test]
    fn a_ticket_outlives_only_what_does_not_concern_it() {
        let versions = Versions::new();
        let ticket = versions.ticket(7);
        versions.invalidate(8);
        assert!(versions.still(ticket));
        versions.invalidate(7 + STRIPES as u64);
        assert!(!versions.still(ticket), "same stripe");
        let ticket = versions.ticket(7);
        versions.flush();
        assert!(!versions.still(ticket));
    }

    #[test]
    fn a_loss_withdraws_the_confirmation() {
        let versions = Versions::new();
        let now = Instant::now();
        let second = Duration::from_secs(1);
        assert!(!versions.confirmed_within(versions.nanos(now), clock::nanos(second)));
        versions.confirm(versions.session(), now);
        assert!(versions.confirmed_within(versions.nanos(now), clock::nanos(second)));
        assert!(versions.confirmed_since(now));
        assert!(!versions.confirmed_since(now + second));
        assert!(!versions.confirmed_within(versions.nanos(now + 2 * second), clock::nanos(second)));
        versions.flush();
        assert!(
            versions.confirmed_within(versions.nanos(now), clock::nanos(second)),
            "a flush is no loss"
        );
        let session = versions.session();
        versions.lose();
        assert!(!versions.confirmed_within(versions.nanos(now), clock::nanos(second)));
        versions.confirm(session, now);
        assert!(
            !versions.confirmed_within(versions.nanos(now), clock::nanos(second)),
            "a confirmation from before the loss"
        );
    }
}
