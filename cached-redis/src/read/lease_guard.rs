//! The guard of a lease: taken by a lease script, renewed while its holder loads, and given
//! back by the write-back, by a release, or, when its holder is dropped, in the background.

use std::future::Future;
use std::time::Duration;

use crate::lease::EntryKeys;
use crate::lease::after_miss::{self, AfterMiss};
use crate::lease::scripts::{self, Acquire};
use crate::read::give_back;
use crate::{Cache, Error, random};

/// A claim on an entry's lease, under a token of its own. Armed while the lease may be held
/// (a lease script in flight, or its reply granting the lease): dropped armed (the loader
/// panicked, the caller was cancelled, Redis did not take the write-back), it gives the lease
/// back in the background, until Redis takes it ([`give_back`]), so waiters take over at once.
pub(crate) struct LeaseGuard {
    cache: Cache,
    keys: EntryKeys,
    token: String,
    lock_ms: u64,
    armed: bool,
    /// The caller's `GET` just found no value: the first request is `SET NX` and a `GET`
    /// ([`after_miss`]), not the lease script.
    after_miss: bool,
    /// How long each lease script may take: `op_timeout`, or less for a call that starts
    /// with it and must leave time for a `GET` after it ([`first_read`](super::first_read)).
    within: Duration,
}

impl LeaseGuard {
    /// A claim not sent yet, for a lease of `lock_ms`.
    pub(crate) fn claim(cache: &Cache, keys: &EntryKeys, lock_ms: u64) -> LeaseGuard {
        LeaseGuard {
            cache: cache.clone(),
            keys: keys.clone(),
            token: random::token(),
            lock_ms,
            armed: false,
            after_miss: false,
            within: cache.inner.guard.op_timeout(),
        }
    }

    /// This claim's first request follows a `GET` that found no value (`after_miss`): it
    /// sends `SET NX` and a `GET` in place of the lease script.
    pub(crate) fn after_miss(mut self, after_miss: bool) -> LeaseGuard {
        self.after_miss = after_miss;
        self
    }

    /// This claim's lease scripts may take `within` at most.
    pub(crate) fn within(mut self, within: Duration) -> LeaseGuard {
        self.within = within;
        self
    }

    /// Asks for the lease once (`corrupt`: bytes found undecodable, replaced only if still
    /// there) and returns the answer with what `before_send` returned, called just before the
    /// request is sent: the lease script, or, for the first request of a claim made
    /// [`after_miss`](LeaseGuard::after_miss), `SET NX` and a `GET`, then the script only
    /// where the lease is held. The claim is armed while a request is in flight (a caller
    /// dropped before the reply may hold the lease) and stays armed after a granted lease, a
    /// value found with the lease taken (given back when the claim is dropped) or an error
    /// (whose outcome is unknown).
    pub(crate) async fn acquire<J>(
        &mut self,
        corrupt: Option<&[u8]>,
        before_send: impl FnOnce() -> J,
    ) -> (Result<Acquire, Error>, J) {
        let inner = &self.cache.inner;
        let first = std::mem::take(&mut self.after_miss) && corrupt.is_none();
        let ask = ask(
            &self.cache,
            &self.keys,
            &self.token,
            self.lock_ms,
            (corrupt, first),
        );
        self.armed = true;
        let sent = before_send();
        let reply = inner
            .guard
            .write_within(&inner.stats, "acquire", self.within, ask)
            .await;
        // A request the open write breaker kept from being sent took nothing.
        self.armed = match &reply {
            Ok((_, leased)) => *leased,
            Err(e) => !matches!(e, Error::Unavailable),
        };
        (reply.map(|(acquire, _)| acquire), sent)
    }

    /// Runs the loader while renewing the lease every third of its TTL, so a loader slower than
    /// `lock_ttl` keeps it. If the lease is lost (revoked by an invalidation, or expired while
    /// Redis was unreachable), another load may start; that is logged, and this load's
    /// write-back will be refused.
    /// Renewals stop after `max_load`, and the lease then expires on its own.
    pub(crate) async fn hold_while<R>(
        &self,
        loader: impl Future<Output = R>,
        max_load: Duration,
    ) -> R {
        let renewing = async {
            let every = Duration::from_millis((self.lock_ms / 3).max(1));
            let until = tokio::time::Instant::now() + max_load.min(crate::policy::LONGEST);
            while tokio::time::Instant::now() + every <= until {
                tokio::time::sleep(every).await;
                // Boxed, as every rare step of a miss is: the miss's future, which each miss
                // moves into a box of its own, keeps the size of its common steps.
                if Box::pin(self.renew()).await == Some(false) {
                    tracing::warn!(
                        key = %self.keys.value,
                        "lease lost while loading (revoked by an invalidation, or expired): another load may run; this one will not be stored"
                    );
                    break;
                }
            }
            std::future::pending::<std::convert::Infallible>().await
        };
        tokio::pin!(loader);
        tokio::select! {
            biased;
            result = &mut loader => result,
            never = renewing => match never {},
        }
    }

    /// Extends the lease: `Some(false)` when it is no longer ours.
    async fn renew(&self) -> Option<bool> {
        let inner = &self.cache.inner;
        let mut conn = inner.writes.clone();
        let op = scripts::renew(&mut conn, &self.keys, &self.token, self.lock_ms);
        inner.guard.write(&inner.stats, "renew", op).await.ok()
    }

    /// Releases the lease while keeping the guard (the load goes on, its write-back will be
    /// refused), waking waiters so they take over now.
    pub(crate) async fn let_go(&self) {
        release(&self.cache, &self.keys, &self.token).await;
    }

    /// The entry's names.
    pub(crate) fn keys(&self) -> &EntryKeys {
        &self.keys
    }

    /// Stores the value if the lease is still ours: `Some(true)` stored, `Some(false)` revoked,
    /// `None` Redis did not answer. The guard stays armed until the reply, and after it if
    /// Redis did not answer: a caller dropped mid-call, or a failed call, still releases the
    /// lease when the guard is dropped.
    pub(crate) async fn write_back(&mut self, bytes: &[u8], ttl_ms: u64) -> Option<bool> {
        let inner = &self.cache.inner;
        let mut conn = inner.writes.clone();
        let publish = inner.writes.publish_command();
        let op = scripts::write_back(&mut conn, &self.keys, &self.token, bytes, ttl_ms, publish);
        let stored = inner.guard.write(&inner.stats, "write-back", op).await.ok();
        self.armed = stored.is_none();
        stored
    }

    /// Lets the lease go: `Some(true)` it was still ours, `Some(false)` revoked, `None` unknown
    /// (the guard, still armed, tries again when it is dropped).
    pub(crate) async fn release(&mut self) -> Option<bool> {
        let released = release(&self.cache, &self.keys, &self.token).await;
        self.armed = released.is_none();
        released
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = std::sync::Arc::downgrade(&self.cache.inner);
        let keys = self.keys.clone();
        let token = std::mem::take(&mut self.token);
        runtime.spawn(give_back::until_taken(inner, keys, token, self.lock_ms));
    }
}

/// Asks Redis for the lease: `SET NX` and a `GET` first where `after_miss` says so (the lease
/// script only if the lease is held, or if Redis answered them with an error), else the script.
/// The answer, and whether the lease was taken.
async fn ask(
    cache: &Cache,
    keys: &EntryKeys,
    token: &str,
    lock_ms: u64,
    (corrupt, after_miss): (Option<&[u8]>, bool),
) -> redis::RedisResult<(Acquire, bool)> {
    let mut conn = cache.inner.writes.clone();
    if after_miss {
        match after_miss::take(&mut conn, keys, token, lock_ms).await {
            Ok(AfterMiss::Leased) => return Ok((Acquire::Leased, true)),
            // Given back when the claim is dropped, if it is ours (see `AfterMiss::Value`).
            Ok(AfterMiss::Value(bytes)) => return Ok((Acquire::Value(bytes), true)),
            Ok(AfterMiss::Held) => {}
            Err(e) if after_miss::unanswered(&e) => return Err(e),
            Err(_) => {}
        }
    }
    let acquire = scripts::acquire(&mut conn, keys, token, lock_ms, corrupt).await?;
    let leased = matches!(acquire, Acquire::Leased);
    Ok((acquire, leased))
}

/// Deletes the lease if `token` still holds it and wakes its waiters: `Some(true)` it did,
/// `Some(false)` the lease was not ours, `None` Redis did not answer.
async fn release(cache: &Cache, keys: &EntryKeys, token: &str) -> Option<bool> {
    let inner = &cache.inner;
    let mut conn = inner.writes.clone();
    let op = scripts::release(&mut conn, keys, token, inner.writes.publish_command());
    inner.guard.write(&inner.stats, "release", op).await.ok()
}
