//! A connection that follows the primary Redis Sentinel names: it asks the sentinels for the
//! primary's address, talks to it through an auto-reconnecting connection, and asks again
//! when that connection fails or the node answers that it is a replica now (`READONLY`).

use std::sync::{Arc, Mutex};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::conn::Conn;
use crate::wake::Wakeups;

/// Connections for reads, for writes and for wake-ups, each following the primary.
pub(crate) fn connections(
    urls: &[String],
    master: &str,
    config: &ConnectionManagerConfig,
) -> RedisResult<(Conn, Conn, Wakeups)> {
    let reads = FollowPrimary::new(urls, master, config.clone(), false)?;
    let writes = FollowPrimary::new(urls, master, config.clone(), false)?;
    let wakeups = Wakeups::new(|push| {
        let config = config
            .clone()
            .set_push_sender(push)
            .set_automatic_resubscription();
        FollowPrimary::new(urls, master, config, true).map(Conn::Sentinel)
    })?;
    Ok((Conn::Sentinel(reads), Conn::Sentinel(writes), wakeups))
}

/// Commands to whichever node the sentinels name as the primary of one master name.
#[derive(Clone)]
pub(crate) struct FollowPrimary(Arc<Following>);

struct Following {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    config: ConnectionManagerConfig,
    /// The connection to the primary the sentinels named last, until it fails.
    current: Mutex<Option<ConnectionManager>>,
}

impl FollowPrimary {
    /// Follows `master` as the sentinels at `urls` name it (over RESP3 if `resp3`, for push
    /// messages); connects on first use.
    pub(crate) fn new(
        urls: &[String],
        master: &str,
        config: ConnectionManagerConfig,
        resp3: bool,
    ) -> RedisResult<FollowPrimary> {
        let node = resp3.then(|| {
            let redis =
                redis::RedisConnectionInfo::default().set_protocol(redis::ProtocolVersion::RESP3);
            SentinelNodeConnectionInfo::default().set_redis_connection_info(redis)
        });
        // A `String` either way: with redis-rs's TLS the parameter is `impl AsRef<str>`.
        let service: String = master.into();
        let client =
            SentinelClient::build(urls.to_vec(), service, node, SentinelServerType::Master)?;
        Ok(FollowPrimary(Arc::new(Following {
            sentinels: tokio::sync::Mutex::new(client),
            config,
            current: Mutex::new(None),
        })))
    }

    /// The connection to the current primary, asking the sentinels if there is none.
    pub(crate) async fn primary(&self) -> RedisResult<ConnectionManager> {
        if let Some(conn) = self.0.current().clone() {
            return Ok(conn);
        }
        let mut sentinels = self.0.sentinels.lock().await;
        // Another caller may have asked while this one waited.
        if let Some(conn) = self.0.current().clone() {
            return Ok(conn);
        }
        let client = sentinels.async_get_client().await?;
        let conn = ConnectionManager::new_with_config(client, self.0.config.clone()).await?;
        *self.0.current() = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `op` on the current primary; a failed connection or a node that turned replica
    /// makes the next call ask the sentinels again.
    async fn on_primary<T>(
        &self,
        op: impl AsyncFnOnce(&mut ConnectionManager) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let mut conn = self.primary().await?;
        let result = op(&mut conn).await;
        if let Err(e) = &result
            && (e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.code() == Some("READONLY"))
        {
            self.0.current().take();
        }
        result
    }

    pub(crate) async fn subscribe(&self, channel: &str) -> RedisResult<()> {
        self.on_primary(async |conn| conn.subscribe(channel).await)
            .await
    }

    pub(crate) async fn unsubscribe(&self, channel: &str) -> RedisResult<()> {
        self.on_primary(async |conn| conn.unsubscribe(channel).await)
            .await
    }

    pub(crate) fn req_packed_command<'a>(&'a self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.on_primary(async |conn| conn.req_packed_command(cmd).await))
    }

    pub(crate) fn req_packed_commands<'a>(
        &'a self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(
            self.on_primary(async move |conn| {
                conn.req_packed_commands(pipeline, offset, count).await
            }),
        )
    }
}

impl Following {
    fn current(&self) -> std::sync::MutexGuard<'_, Option<ConnectionManager>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}
