//! The tracking connections: a RESP3 connection of the near cache's own to each node that
//! holds entries (the one Redis, every cluster master, the primary Sentinel names), on which
//! Redis sends an invalidation for every write under the namespace (`CLIENT TRACKING ON BCAST
//! PREFIX`), applied where the connection reads them, in the order they arrive. A heartbeat
//! confirms what has been applied; losing a connection, a failed heartbeat, a failed setup or
//! a change of the nodes (a failover, a master added or removed) flushes every copy, and the
//! connections are made again.
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

use super::nodes::{Nodes, Tracked};
use super::shared::Shared;

/// The pause after a failed session before the next; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the tracker needs to connect.
pub(super) struct Target {
    /// Where the entries live.
    pub(super) nodes: Nodes,
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

/// One set of connections, from their setup to the loss of one of them (the error says how).
async fn session(target: &Target, shared: &Arc<Shared>) -> redis::RedisError {
    // Messages of a connection whose session has ended (its `Disconnection` among them,
    // which may come after the next session began) are not applied.
    let current = Current(Arc::new(AtomicBool::new(true)));
    let tracked = match target.nodes.tracked().await {
        Ok(tracked) => tracked,
        Err(e) => return e,
    };
    let mut conns = Vec::with_capacity(tracked.clients.len());
    for client in &tracked.clients {
        match connect(client, target, shared, &current.0).await {
            Ok(conn) => conns.push(conn),
            Err(e) => return e,
        }
    }
    // Copies read before tracking began may have missed invalidations.
    shared.lose();
    heartbeat(&mut conns, &tracked, &target.nodes, shared).await
}

/// Marks a session's messages stale when it ends, however it ends.
struct Current(Arc<AtomicBool>);

impl Drop for Current {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

async fn connect(
    client: &redis::Client,
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
    let mut conn = client
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
/// invalidation written after that PING's reply, never after the next one's). A round
/// confirms only once every node answered and the nodes were found unchanged after it: a
/// node that started holding entries since is tracked before anything is confirmed for it.
async fn heartbeat(
    conns: &mut [MultiplexedConnection],
    tracked: &Tracked,
    nodes: &Nodes,
    shared: &Shared,
) -> redis::RedisError {
    let mut ticker = tokio::time::interval(shared.lag / 5);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let session = shared.versions.session();
    let mut previous: Option<Instant> = None;
    loop {
        ticker.tick().await;
        let sent = Instant::now();
        for conn in conns.iter_mut() {
            if let Err(e) = redis::cmd("PING").query_async::<()>(conn).await {
                return e;
            }
        }
        let bound = tokio::time::timeout(shared.lag / 2, nodes.unchanged(tracked)).await;
        match bound {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return lost("the nodes holding entries changed"),
            Ok(Err(e)) => return e,
            Err(_) => return lost("the nodes holding entries could not be checked in time"),
        }
        if shared.versions.session() != session {
            return lost("a tracking connection reported its disconnection");
        }
        if let Some(previous) = previous {
            shared.versions.confirm(session, previous);
        }
        previous = Some(sent);
    }
}

fn lost(why: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, why))
}

/// Applies one message of the tracking connection, inline where the connection reads it.
fn apply(shared: &Shared, info: PushInfo) {
    match info.kind {
        PushKind::Invalidate => match info.data.into_iter().next() {
            Some(Value::Array(keys)) => {
                for key in keys {
                    if let Value::BulkString(key) = key {
                        match std::str::from_utf8(&key) {
                            Ok(key) => shared.forget_redis_key(key),
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
