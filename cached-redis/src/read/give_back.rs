//! Giving back a lease its holder no longer needs (the caller was dropped mid-load, a value
//! turned up after the lease was taken, Redis did not take the write-back), in a task of its
//! own, until Redis takes it.
//!
//! A lease left to expire holds every other process's caller of the key for up to `lock_ttl`,
//! with Redis healthy. So the give-back does not go through the write breaker, which only
//! spares callers the wait for a Redis that does not answer (and a call whose own timeout
//! opened the breaker is the very one whose lease may have landed). It sends one request and
//! waits for its answer rather than send another behind it: a paused or black-holed connection
//! runs its commands in order once it moves again, so the give-back follows a late `SET NX`.
//! It sends again where that can free the lease and another request cannot pile up behind
//! the first: at once where the primary behind Sentinel changed while it waited; 50 ms later,
//! backing off to once a second, where the request was lost with its connection or Redis
//! answered that it cannot take it now (`OOM`, `READONLY`, `MASTERDOWN`, `BUSY`, `LOADING`);
//! [`UNANSWERED_FIRST`] later, backing off to [`UNANSWERED_LONGEST`], where a client's own
//! reply timeout gave up on it (a cluster's), since it may still be queued. All of it within the
//! lease's TTL, and at least [`AT_LEAST`]; the task holds the cache weakly, and ends within a
//! second of the cache being dropped.

use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use crate::Error;
use crate::cache::Inner;
use crate::conn::{Conn, guard};
use crate::lease::{EntryKeys, scripts};

/// The first wait before sending again a request that was lost or refused, and the longest;
/// also how often a wait for an answer checks on the cache and on the primary.
const FIRST: Duration = Duration::from_millis(50);
const LONGEST: Duration = Duration::from_secs(1);

/// The first wait before sending again a request a client's reply timeout gave up on (which
/// redis-rs's cluster client has already sent a second time), and the longest.
const UNANSWERED_FIRST: Duration = Duration::from_secs(2);
const UNANSWERED_LONGEST: Duration = Duration::from_secs(8);

/// The shortest time the give-back is tried for, whatever the lease's TTL.
const AT_LEAST: Duration = Duration::from_secs(60);

/// Releases the lease `token` may hold, waking its waiters, until Redis answers (whether it
/// was still ours or not), answers with an error sending again cannot mend, the time is up,
/// or the cache is gone.
pub(crate) async fn until_taken(inner: Weak<Inner>, keys: EntryKeys, token: String, lock_ms: u64) {
    let Some(mut conn) = inner.upgrade().map(|cache| cache.writes.clone()) else {
        return;
    };
    let (watch, publish) = (conn.clone(), conn.publish_command());
    let until = Instant::now() + Duration::from_millis(lock_ms).max(AT_LEAST);
    let (mut soon, mut later) = (FIRST, UNANSWERED_FIRST);
    loop {
        let sent_to = watch.primary_generation();
        let released = scripts::release(&mut conn, &keys, &token, publish);
        let wait = match answer_of(&inner, &watch, sent_to, released, until).await {
            Answer::Moved => Duration::ZERO,
            Answer::Got(Err(e)) => {
                let e = Error::Redis(e);
                if let Some(cache) = inner.upgrade() {
                    cache.guard.note_failure(&cache.stats, "release", &e);
                }
                match again(&e) {
                    Again::Soon => next(&mut soon, LONGEST),
                    Again::Later => next(&mut later, UNANSWERED_LONGEST),
                    Again::Never => return,
                }
            }
            Answer::Got(Ok(_)) | Answer::Gone => return,
        };
        if Instant::now() + wait > until {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

/// The wait `backoff` holds, doubling it up to `longest` for the next time.
fn next(backoff: &mut Duration, longest: Duration) -> Duration {
    let wait = *backoff;
    *backoff = (wait * 2).min(longest);
    wait
}

/// What came of a request.
enum Answer<T> {
    /// Redis's answer.
    Got(redis::RedisResult<T>),
    /// The primary behind Sentinel changed while it waited: the request went to a node the
    /// cache no longer writes to.
    Moved,
    /// No answer by the end, or the cache was dropped.
    Gone,
}

/// Waits for `request`'s answer until `until`, checking every [`LONGEST`] that the cache is
/// still there and that the primary it was `sent_to` is still the one `conn` follows.
async fn answer_of<T>(
    inner: &Weak<Inner>,
    conn: &Conn,
    sent_to: Option<u64>,
    request: impl Future<Output = redis::RedisResult<T>>,
    until: Instant,
) -> Answer<T> {
    tokio::pin!(request);
    loop {
        let slice = (Instant::now() + LONGEST).min(until);
        match tokio::time::timeout_at(slice, &mut request).await {
            Ok(answer) => return Answer::Got(answer),
            Err(_) if slice >= until || inner.strong_count() == 0 => return Answer::Gone,
            Err(_) if conn.primary_generation() != sent_to => return Answer::Moved,
            Err(_) => {}
        }
    }
}

/// Whether, and how soon, to send again after `error`.
enum Again {
    Soon,
    Later,
    Never,
}

fn again(error: &Error) -> Again {
    let Error::Redis(e) = error else {
        return Again::Never;
    };
    if e.is_timeout() {
        return Again::Later;
    }
    let busy = e.code() == Some("BUSY");
    let transient = !matches!(e.retry_method(), redis::RetryMethod::NoRetry);
    if busy || transient || guard::is_outage(error) || guard::refuses_writes(error) {
        Again::Soon
    } else {
        Again::Never
    }
}
