//! A connection that follows the primary Redis Sentinel names: it asks the sentinels for the
//! primary's address, talks to it through an auto-reconnecting connection, and asks again
//! when that connection fails or the node answers that it is a replica now (`READONLY`).

use std::sync::{Arc, Mutex};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::conn::Conn;
use crate::wake::Wakeups;

/// The master name the sentinels monitor, and how to log in to its data nodes.
#[derive(Clone)]
pub(crate) struct Service {
    master: String,
    auth: Option<NodeAuth>,
}

impl Service {
    pub(crate) fn new(master: &str) -> Service {
        Service {
            master: master.to_owned(),
            auth: None,
        }
    }

    pub(crate) fn with_auth(self, auth: Option<NodeAuth>) -> Service {
        Service { auth, ..self }
    }
}

/// The data nodes' credentials (`AUTH [username] password`).
#[derive(Clone)]
pub(crate) struct NodeAuth {
    username: Option<String>,
    password: String,
}

impl NodeAuth {
    pub(crate) fn new(username: Option<&str>, password: &str) -> NodeAuth {
        NodeAuth {
            username: username.map(str::to_owned),
            password: password.to_owned(),
        }
    }
}

/// Connections for reads, for writes and for wake-ups, each following the primary.
pub(crate) fn connections(
    urls: &[String],
    service: &Service,
    config: &ConnectionManagerConfig,
) -> RedisResult<(Conn, Conn, Wakeups)> {
    let reads = FollowPrimary::new(urls, service, config.clone(), false)?;
    let writes = FollowPrimary::new(urls, service, config.clone(), false)?;
    let wakeups = Wakeups::new(|push| {
        let config = config
            .clone()
            .set_push_sender(push)
            .set_automatic_resubscription();
        FollowPrimary::new(urls, service, config, true).map(Conn::Sentinel)
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
    /// Follows the service's master as the sentinels at `urls` name it (over RESP3 if
    /// `resp3`, for push messages); connects on first use.
    pub(crate) fn new(
        urls: &[String],
        service: &Service,
        config: ConnectionManagerConfig,
        resp3: bool,
    ) -> RedisResult<FollowPrimary> {
        let mut redis = redis::RedisConnectionInfo::default();
        if resp3 {
            redis = redis.set_protocol(redis::ProtocolVersion::RESP3);
        }
        if let Some(auth) = &service.auth {
            redis = redis.set_password(&auth.password);
            if let Some(username) = &auth.username {
                redis = redis.set_username(username);
            }
        }
        let node = Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(redis));
        // A `String` either way: with redis-rs's TLS the parameter is `impl AsRef<str>`.
        let service: String = service.master.clone();
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
