//! The tracking connection: a RESP3 connection of the near cache's own, on which Redis sends
//! an invalidation for every write under the namespace (`CLIENT TRACKING ON BCAST PREFIX`),
//! applied where the connection reads them, in the order they arrive. A heartbeat confirms
//! what has been applied; losing the connection, a failed heartbeat or a failed setup flushes
//! every copy, and the connection is made again.
//!
//! BCAST rather than the default mode: the server remembers nothing per key, the
//! invalidations do not depend on which connection read a key (reads stay on the cache's
//! RESP2 connections, which reconnect on their own), and a read needs no `CLIENT CACHING`
//! first. The cost is that every write under the namespace (leases included) reaches every
//! process with a near cache, as one short message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};

use super::shared::Shared;

/// The pause after a failed session before the next; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the tracker needs to connect.
pub(super) struct Target {
    /// A RESP3 client for the Redis that holds the entries.
    pub(super) client: redis::Client,
    /// `<namespace>:`: every key of this cache starts with it.
    pub(super) prefix: String,
    pub(super) connect_timeout: Duration,
}

/// Runs sessions for as long as the near cache lives (the task is aborted when it is dropped).
pub(super) async fn run(target: Target, shared: Arc<Shared>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let started = Instant::now();
        let ended = session(&target, &shared).await;
        shared.lose();
        tracing::warn!(error = %ended, "near cache: the tracking connection is lost; near copies flushed, hits go to Redis until it is back");
        if started.elapsed() > MAX_BACKOFF {
            backoff = MIN_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection, from its setup to its loss (the error says how it was lost).
async fn session(target: &Target, shared: &Arc<Shared>) -> redis::RedisError {
    // Messages of a connection whose session has ended (its `Disconnection` among them,
    // which may come after the next session began) are not applied.
    let current = Current(Arc::new(AtomicBool::new(true)));
    let mut conn = match connect(target, shared, &current.0).await {
        Ok(conn) => conn,
        Err(e) => return e,
    };
    // Copies read before tracking began may have missed invalidations.
    shared.lose();
    heartbeat(&mut conn, shared).await
}

/// Marks a session's messages stale when it ends, however it ends.
struct Current(Arc<AtomicBool>);

impl Drop for Current {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

async fn connect(
    target: &Target,
    shared: &Arc<Shared>,
    current: &Arc<AtomicBool>,
) -> redis::RedisResult<MultiplexedConnection> {
    let (handler, current) = (Arc::clone(shared), Arc::clone(current));
    let push = move |info: PushInfo| {
        if current.load(Ordering::SeqCst) {
            apply(&handler, info);
        }
        Ok::<(), std::convert::Infallible>(())
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_push_sender(push)
        .set_connection_timeout(Some(target.connect_timeout))
        .set_response_timeout(Some(shared.lag / 2));
    let mut conn = target
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("BCAST")
        .arg("PREFIX")
        .arg(&target.prefix)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(conn)
}

/// Pings every fifth of the lag allowed. A PING's reply comes after every invalidation Redis
/// wrote to this connection before it, and those are applied before the reply is read: so
/// when the reply to one PING arrives, every write Redis had processed before the previous
/// PING was sent has been applied (a write processed together with that PING may have its
/// invalidation written after that PING's reply, never after the next one's).
async fn heartbeat(conn: &mut MultiplexedConnection, shared: &Shared) -> redis::RedisError {
    let mut ticker = tokio::time::interval(shared.lag / 5);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let session = shared.versions.session();
    let mut previous: Option<Instant> = None;
    loop {
        ticker.tick().await;
        let sent = Instant::now();
        if let Err(e) = redis::cmd("PING").query_async::<()>(conn).await {
            return e;
        }
        if shared.versions.session() != session {
            return redis::RedisError::from((
                redis::ErrorKind::Io,
                "the tracking connection reported its disconnection",
            ));
        }
        if let Some(previous) = previous {
            shared.versions.confirm(session, previous);
        }
        previous = Some(sent);
    }
}

/// Applies one message of the tracking connection, inline where the connection reads it.
fn apply(shared: &Shared, info: PushInfo) {
    match info.kind {
        PushKind::Invalidate => match info.data.into_iter().next() {
            Some(Value::Array(keys)) => {
                for key in keys {
                    if let Value::BulkString(key) = key {
                        match std::str::from_utf8(&key) {
                            Ok(key) => shared.forget(key),
                            // Not one of ours (our keys are text): but it concerns something.
                            Err(_) => shared.flush(),
                        }
                    }
                }
            }
            // `FLUSHALL` / `FLUSHDB`: every key went.
            _ => shared.flush(),
        },
        PushKind::Disconnection => shared.lose(),
        _ => {}
    }
}
