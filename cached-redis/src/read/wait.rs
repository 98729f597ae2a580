//! How a leader that found the lease held by another process waits for its holder: woken by
//! a message when the holder stores a value or lets go, re-checking the lease on a timer in
//! case no message comes.

use std::time::Duration;

use crate::lease::{Acquire, EntryKeys};
use crate::read::flight::{Joined, Leader};
use crate::read::lease_guard::LeaseGuard;
use crate::read::wake::Subscription;
use crate::stats::Event;
use crate::stored::codec;
use crate::{Cache, CacheValue, Policy};

/// How often a waiter checks the lease when it could not subscribe for wake-ups.
const POLL_WITHOUT_WAKEUPS: Duration = Duration::from_millis(20);

/// The longest a waiter subscribed for wake-ups goes without checking the lease itself.
const MAX_RECHECK: Duration = Duration::from_millis(500);

/// What the local leader found when it went for the lease.
pub(super) enum Lease<T> {
    /// A value appeared (another process loaded it), read by a lease script sent when
    /// `Joined` callers had joined the local load.
    Value(Vec<u8>, T, Joined),
    /// A value, as `Value`, found after waiting for the lease's holder in another process.
    Waited(Vec<u8>, T, Joined),
    /// We hold the lease with this token.
    Held(LeaseGuard),
    /// Redis answered, refusing writes (`OOM`, `READONLY`, ...): load without the lease.
    WritesRefused,
    /// Redis could not be asked: load without the lease.
    Unavailable,
}

impl Cache {
    /// Takes the lease, or waits (woken by Redis) until its holder stores a value or lets go;
    /// each request for it within `within`; the first one `after_miss` (see
    /// [`LeaseGuard::after_miss`]) where the call's `GET` found no value.
    pub(super) async fn lease_or_value<T: CacheValue>(
        &self,
        leader: &Leader,
        keys: &EntryKeys,
        policy: &Policy,
        (mut corrupt, within, after_miss): (Option<Vec<u8>>, Duration, bool),
    ) -> Lease<T> {
        let inner = &self.inner;
        let lock_ttl = self.lock_ttl_for(policy);
        let claim = LeaseGuard::claim(self, keys, self.lock_ms_for(policy));
        let mut claim = claim.within(within).after_miss(after_miss);
        let mut subscription = None;
        let mut waited = false;
        loop {
            // A value in the reply is fresh for the callers that joined before it was asked for.
            let (reply, joined) = claim.acquire(corrupt.as_deref(), || leader.joined()).await;
            match reply {
                Err(e) if crate::conn::guard::refuses_writes(&e) => return Lease::WritesRefused,
                Err(_) => return Lease::Unavailable,
                Ok(Acquire::Value(bytes)) => match codec::decode(&bytes) {
                    Ok(value) if waited => return Lease::Waited(bytes, value, joined),
                    Ok(value) => return Lease::Value(bytes, value, joined),
                    Err(e) => {
                        self.undecodable(&keys.value, policy.name(), &e);
                        corrupt = Some(bytes);
                    }
                },
                Ok(Acquire::Leased) => return Lease::Held(claim),
                Ok(Acquire::HeldFor { millis }) => {
                    if !waited {
                        waited = true;
                        inner.stats.note(Event::LockWait, policy.name());
                        tracing::debug!(key = %keys.value, "another caller is loading; waiting");
                    }
                    let until_expiry = Duration::from_millis(millis + 1);
                    // Boxed: a rare step (see `LeaseGuard::hold_while`).
                    let wait =
                        self.wait_for_holder(&mut subscription, keys, until_expiry, lock_ttl);
                    Box::pin(wait).await;
                }
            }
        }
    }

    /// How long a lease of `policy`'s entries lasts unless renewed.
    pub(super) fn lock_ttl_for(&self, policy: &Policy) -> Duration {
        policy
            .lock_ttl()
            .unwrap_or(self.inner.lock_ttl)
            .min(crate::policy::LONGEST)
    }

    /// [`Cache::lock_ttl_for`] in whole milliseconds, at least 1: the lease script's `PX`.
    pub(super) fn lock_ms_for(&self, policy: &Policy) -> u64 {
        let lock_ttl = self.lock_ttl_for(policy);
        u64::try_from(lock_ttl.as_millis()).unwrap_or(1).max(1)
    }

    /// One wait for the lease's holder: the first subscribes to the entry's wake-ups (then
    /// the caller checks again, so nothing published after the check can be missed;
    /// subscribing takes at most the lease's remaining time), later ones wait for a message,
    /// the lease's expiry or the next re-check, whichever comes first.
    async fn wait_for_holder(
        &self,
        subscription: &mut Option<Subscription>,
        keys: &EntryKeys,
        until_expiry: Duration,
        lock_ttl: Duration,
    ) {
        let inner = &self.inner;
        match subscription {
            None => {
                let wakeups = &inner.wakeups;
                let sub =
                    wakeups.subscribe(&keys.channel, until_expiry, &inner.guard, &inner.stats);
                *subscription = Some(sub.await);
            }
            Some(sub) => {
                let every = if sub.is_live() {
                    recheck_every(lock_ttl)
                } else {
                    POLL_WITHOUT_WAKEUPS
                };
                sub.wait(until_expiry.min(every)).await;
            }
        }
    }
}

/// How often a woken-by-message waiter checks the lease anyway: a lease can vanish without a
/// message (`FLUSHALL`, an eviction, a restart with an empty dataset), and its waiters must
/// notice well before the expiry they last saw.
fn recheck_every(lock_ttl: Duration) -> Duration {
    (lock_ttl / 4).clamp(POLL_WITHOUT_WAKEUPS, MAX_RECHECK)
}
