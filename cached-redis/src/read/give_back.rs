//! Giving back a lease its holder no longer needs (the caller was dropped mid-load, a value
//! turned up after the lease was taken, Redis did not take the write-back), in a task of its
//! own, until Redis takes it.
//!
//! A lease left to expire holds every other process's caller of the key for up to `lock_ttl`,
//! with Redis healthy. So the give-back does not go through the write breaker, which only
//! spares callers the wait for a Redis that does not answer (and a call whose own timeout
//! opened the breaker is the very one whose lease may have landed), and it is tried again
//! while Redis leaves it unanswered or refuses writes: 50 ms later, then backing off to once
//! a second, for as long as the lease's TTL and at least [`AT_LEAST`]. A connection that was
//! black-holed delivers its commands in order once it forwards again, so a late `SET NX` is
//! followed by the give-back that frees it. The task holds the cache weakly.

use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use crate::cache::Inner;
use crate::conn::guard;
use crate::lease::{EntryKeys, scripts};

/// The first wait before trying again, and the longest between two tries.
const FIRST: Duration = Duration::from_millis(50);
const LONGEST: Duration = Duration::from_secs(1);

/// The shortest time the give-back is tried for, whatever the lease's TTL.
const AT_LEAST: Duration = Duration::from_secs(60);

/// Releases the lease `token` may hold, waking its waiters, until Redis answers (whether it
/// was still ours or not), answers with an error trying again cannot mend, the time is up, or
/// the cache is gone.
pub(crate) async fn until_taken(inner: Weak<Inner>, keys: EntryKeys, token: String, lock_ms: u64) {
    let until = Instant::now() + Duration::from_millis(lock_ms).max(AT_LEAST);
    let mut wait = FIRST;
    loop {
        let Some(cache) = inner.upgrade() else {
            return;
        };
        let mut conn = cache.writes.clone();
        let publish = cache.writes.publish_command();
        let op = scripts::release(&mut conn, &keys, &token, publish);
        match cache.guard.bounded(&cache.stats, "release", op).await {
            Err(e) if guard::is_outage(&e) || guard::refuses_writes(&e) => {}
            _ => return,
        }
        drop(cache);
        if Instant::now() + wait > until {
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(LONGEST);
    }
}
