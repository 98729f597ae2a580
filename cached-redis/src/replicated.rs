//! Invalidations and updates that wait for replicas (`CacheBuilder::invalidate_replicas`): the
//! writes and `WAIT` in one pipeline, on a connection of their own.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Pipeline, Value};

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

    /// The connection replica-confirmed writes go over.
    pub(crate) fn conn(&self) -> &Conn {
        &self.conn
    }

    /// The invalidation script, then `WAIT` on the same connection for the replicas.
    pub(crate) async fn invalidate(&self, inner: &Inner, keys: &EntryKeys) -> Result<bool, Error> {
        let eval = lease::invalidate_eval(keys, inner.writes.publish_command());
        self.script(inner, "invalidate", keys, eval).await
    }

    /// An update's compare-and-set, then `WAIT`: whether it replaced the value.
    pub(crate) async fn compare_and_set(
        &self,
        inner: &Inner,
        keys: &EntryKeys,
        read: &[u8],
        replacement: &[u8],
    ) -> Result<bool, Error> {
        let eval = lease::compare_and_set_eval(keys, read, replacement);
        self.script(inner, "update", keys, eval).await
    }

    /// A script over one entry (`EVAL`), then `WAIT`, and the script's reply once the replicas
    /// confirmed it.
    async fn script<T: redis::FromRedisValue>(
        &self,
        inner: &Inner,
        what: &'static str,
        keys: &EntryKeys,
        eval: redis::Cmd,
    ) -> Result<T, Error> {
        let _turn = self.one_at_a_time.lock().await;
        // The script and WAIT in one pipeline: WAIT counts this connection's writes, so both
        // must go over the same connection (a reconnect in between would confirm nothing).
        let mut pipe = redis::pipe();
        pipe.add_command(eval);
        self.append_wait(&mut pipe);
        let conn = &self.conn;
        let sent = async {
            let replies = conn.pipeline_at(&keys.value, pipe).await?;
            let replies = redis::Value::Array(replies);
            redis::from_redis_value::<(T, u32)>(replies).map_err(redis::RedisError::from)
        };
        // Bounded by `within` on the server, plus op_timeout; it counts for the write breaker
        // only if Redis itself did not answer in time.
        let (reply, acknowledged) = inner
            .guard
            .write_within(&inner.stats, what, self.within, sent)
            .await?;
        self.check(acknowledged)?;
        Ok(reply)
    }

    /// Sends the writes in `pipe`, then `WAIT`, as one unit over `conn` (one at a time), and
    /// returns the writes' replies once the replicas confirmed them.
    pub(crate) async fn send_confirmed<C>(
        &self,
        inner: &Inner,
        what: &'static str,
        conn: &C,
        mut pipe: Pipeline,
    ) -> Result<Vec<Value>, Error>
    where
        C: ConnectionLike + Clone + Send + Sync,
    {
        let _turn = self.one_at_a_time.lock().await;
        self.append_wait(&mut pipe);
        let mut conn = conn.clone();
        let sent = pipe.query_async::<Vec<Value>>(&mut conn);
        let mut replies = inner
            .guard
            .write_within(&inner.stats, what, self.within, sent)
            .await?;
        let acknowledged = replies.pop().map(redis::from_redis_value::<u32>);
        let acknowledged = acknowledged
            .transpose()
            .map_err(|e| Error::Redis(redis::RedisError::from(e)))?
            .unwrap_or(0);
        self.check(acknowledged)?;
        Ok(replies)
    }

    fn append_wait(&self, pipe: &mut Pipeline) {
        let within_ms = u64::try_from(self.within.as_millis()).unwrap_or(u64::MAX);
        pipe.cmd("WAIT").arg(self.replicas).arg(within_ms);
    }

    /// `Err(NotReplicated)` unless `acknowledged` replicas confirmed.
    fn check(&self, acknowledged: u32) -> Result<(), Error> {
        if acknowledged < self.replicas {
            return Err(Error::NotReplicated {
                acknowledged,
                wanted: self.replicas,
            });
        }
        Ok(())
    }
}
