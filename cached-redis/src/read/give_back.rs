//! Giving back a lease its holder no longer needs (the caller was dropped mid-load, a value
//! turned up after the lease was taken, Redis did not take the write-back), in a task of its
//! own, until Redis takes it.
//!
//! A lease left to expire holds every other process's caller of the key for up to `lock_ttl`,
//! with Redis healthy. So the give-back does not go through the write breaker, which only
//! spares callers the wait for a Redis that does not answer (and a call whose own timeout
//! opened the breaker is the very one whose lease may have landed). It sends one request at a
//! time and waits for its answer rather than send another behind it (a paused or black-holed
//! connection delivers its commands in order once it moves again, so a late `SET NX` is
//! followed by the give-back that frees it), and sends again only where the request was lost
//! with its connection or Redis refused it (`OOM`, `READONLY`): 50 ms later, then backing off
//! to once a second. All of it within the lease's TTL, and at least [`AT_LEAST`]; the task
//! holds the cache weakly, and ends within a second of the cache being dropped.

use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use crate::Error;
use crate::cache::Inner;
use crate::conn::guard;
use crate::lease::{EntryKeys, scripts};

/// The first wait before sending again, and the longest between two sends; also how often a
/// wait for an answer checks that the cache is still there.
const FIRST: Duration = Duration::from_millis(50);
const LONGEST: Duration = Duration::from_secs(1);

/// The shortest time the give-back is tried for, whatever the lease's TTL.
const AT_LEAST: Duration = Duration::from_secs(60);

/// Releases the lease `token` may hold, waking its waiters, until Redis answers (whether it
/// was still ours or not), answers with an error sending again cannot mend, the time is up,
/// or the cache is gone.
pub(crate) async fn until_taken(inner: Weak<Inner>, keys: EntryKeys, token: String, lock_ms: u64) {
    let Some(mut conn) = inner.upgrade().map(|cache| cache.writes.clone()) else {
        return;
    };
    let publish = conn.publish_command();
    let until = Instant::now() + Duration::from_millis(lock_ms).max(AT_LEAST);
    let mut wait = FIRST;
    loop {
        let released = scripts::release(&mut conn, &keys, &token, publish);
        let Some(Err(e)) = answer_of(&inner, released, until).await else {
            return;
        };
        let e = Error::Redis(e);
        if let Some(cache) = inner.upgrade() {
            cache.guard.note_failure(&cache.stats, "release", &e);
        }
        if !(guard::is_outage(&e) || guard::refuses_writes(&e)) || Instant::now() + wait > until {
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(LONGEST);
    }
}

/// Redis's answer to `request`, waited for until `until`: `None` if it did not come by then,
/// or the cache was dropped meanwhile (checked every [`LONGEST`]).
async fn answer_of<T>(
    inner: &Weak<Inner>,
    request: impl Future<Output = redis::RedisResult<T>>,
    until: Instant,
) -> Option<redis::RedisResult<T>> {
    tokio::pin!(request);
    loop {
        let slice = (Instant::now() + LONGEST).min(until);
        match tokio::time::timeout_at(slice, &mut request).await {
            Ok(answer) => return Some(answer),
            Err(_) if slice >= until || inner.strong_count() == 0 => return None,
            Err(_) => {}
        }
    }
}
