//! Invalidations that wait for replicas (`CacheBuilder::invalidate_replicas`): the
//! invalidation script and `WAIT` in one pipeline, on a connection of their own.

use std::time::Duration;

use crate::Error;
use crate::cache::Inner;
use crate::conn::Conn;
use crate::lease::{self, EntryKeys};

/// Invalidations that wait for replicas: their own connection, since `WAIT` blocks the
/// connection it is sent on (hits must not queue behind it) and counts that connection's
/// writes.
pub(crate) struct Replicated {
    conn: Conn,
    replicas: u32,
    within: Duration,
    /// One replicated invalidation at a time: `WAIT` holds its connection on the server, and a
    /// second one sent behind it would wait out the first's `within` inside its own deadline.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Replicated {
    pub(crate) fn new(conn: Conn, replicas: u32, within: Duration) -> Replicated {
        Replicated {
            conn,
            replicas,
            within,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// The invalidation script, then `WAIT` on the same connection for the replicas.
    pub(crate) async fn invalidate(&self, inner: &Inner, keys: &EntryKeys) -> Result<bool, Error> {
        let replicated = self;
        let _turn = replicated.one_at_a_time.lock().await;
        // The script and WAIT in one pipeline: WAIT counts this connection's writes, so both
        // must go over the same connection (a reconnect in between would confirm nothing).
        let mut pipe = redis::pipe();
        pipe.add_command(lease::invalidate_eval(keys, inner.writes.publish_command()))
            .cmd("WAIT")
            .arg(replicated.replicas)
            .arg(replicated.within.as_millis() as u64);
        let conn = &replicated.conn;
        let sent = async {
            let replies = conn.pipeline_at(&keys.value, pipe).await?;
            let replies = redis::Value::Array(replies);
            redis::from_redis_value::<(bool, u32)>(replies).map_err(redis::RedisError::from)
        };
        // Bounded by `within` on the server, plus op_timeout; it counts for the write breaker
        // only if Redis itself did not answer in time.
        let (removed, acknowledged) = inner
            .guard
            .write_within(&inner.stats, "invalidate", replicated.within, sent)
            .await?;
        if acknowledged < replicated.replicas {
            return Err(Error::NotReplicated {
                acknowledged,
                wanted: replicated.replicas,
            });
        }
        Ok(removed)
    }
}
