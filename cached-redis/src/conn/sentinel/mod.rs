//! Connections that follow the primary Redis Sentinel names. One [`Primary`] per cache asks
//! the sentinels where the primary is (in the background, see [`primary`]); each connection
//! (reads, writes, wake-ups, the replication `WAIT` one) talks to the node named last through
//! an auto-reconnecting connection, made for that node's *generation*. When any of them fails
//! on it, or the node answers that it is a replica now (`READONLY`), the generation is lost
//! and every connection of the cache moves to the next primary the sentinels name before its
//! next call.

mod primary;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use redis::aio::{AsyncPushSender, ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, Pipeline, PushInfo, PushKind, RedisFuture, RedisResult, Value};

pub(crate) use primary::Primary;

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

    /// Where this service's primary is, as the sentinels at `urls` name it: one per cache,
    /// shared by all its connections. Asks nothing yet.
    pub(crate) fn primary(&self, urls: &[String]) -> RedisResult<Primary> {
        let mut redis = redis::RedisConnectionInfo::default();
        if let Some(auth) = &self.auth {
            redis = redis.set_password(&auth.password);
            if let Some(username) = &auth.username {
                redis = redis.set_username(username);
            }
        }
        let node = Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(redis));
        // A `String` either way: with redis-rs's TLS the parameter is `impl AsRef<str>`.
        let master: String = self.master.clone();
        let client =
            SentinelClient::build(urls.to_vec(), master, node, SentinelServerType::Master)?;
        Ok(Primary::new(client))
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

/// Commands to whichever node the sentinels name as the primary of one master name.
#[derive(Clone)]
pub(crate) struct FollowPrimary(Arc<Following>);

struct Following {
    primary: Primary,
    config: ConnectionManagerConfig,
    /// The connection to the primary of one generation, until a newer one is named.
    current: Mutex<Option<(u64, ConnectionManager)>>,
    /// A subscriber's channels and push receiver; `None` for a command connection.
    subscriber: Option<Subscriber>,
}

/// What a subscriber carries to a new primary: its channels, and the receiver of its push
/// messages, told to check again once they are subscribed there.
struct Subscriber {
    channels: Mutex<HashSet<String>>,
    push: Arc<dyn AsyncPushSender>,
}

/// The bound on subscribing a subscriber's channels again on a new primary.
const RESUBSCRIBE_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

impl FollowPrimary {
    /// Commands (RESP2) to `primary`'s node; connects on first use.
    pub(crate) fn new(primary: &Primary, config: ConnectionManagerConfig) -> FollowPrimary {
        FollowPrimary(Arc::new(Following {
            primary: primary.clone(),
            config,
            current: Mutex::new(None),
            subscriber: None,
        }))
    }

    /// A subscriber (RESP3) on `primary`'s node, delivering push messages to `push`. Its
    /// channels follow the primary: on a new one they are subscribed again, then `push` is
    /// sent a `Disconnection` so that whoever waited checks again.
    pub(crate) fn subscriber(
        primary: &Primary,
        config: ConnectionManagerConfig,
        push: impl AsyncPushSender,
    ) -> FollowPrimary {
        let push: Arc<dyn AsyncPushSender> = Arc::new(push);
        let config = config
            .set_push_sender(push.clone())
            .set_automatic_resubscription();
        let following = Arc::new(Following {
            primary: primary.clone(),
            config,
            current: Mutex::new(None),
            subscriber: Some(Subscriber {
                channels: Mutex::default(),
                push,
            }),
        });
        tokio::spawn(follow_channels(
            Arc::downgrade(&following),
            primary.changes(),
        ));
        FollowPrimary(following)
    }

    /// The connection to the primary named last, made anew when a newer primary was named
    /// than the one this connection was made for. While none is known, waits for the
    /// sentinels (callers bound the wait), or answers the error of an attempt that failed
    /// meanwhile.
    async fn connection(&self) -> RedisResult<(u64, ConnectionManager)> {
        let (generation, node) = self.0.primary.named().await?;
        let mut current = self.0.current();
        if let Some((made_for, conn)) = &*current
            && *made_for >= generation
        {
            return Ok((*made_for, conn.clone()));
        }
        let node = match self.0.subscriber {
            Some(_) => {
                let resp3 = node.redis_settings().clone();
                let resp3 = resp3.set_protocol(redis::ProtocolVersion::RESP3);
                node.set_redis_settings(resp3)
            }
            None => node,
        };
        let client = redis::Client::open(node)?;
        let conn = ConnectionManager::new_lazy_with_config(client, self.0.config.clone())?;
        let replaced = current.replace((generation, conn.clone())).is_some();
        drop(current);
        if replaced {
            self.carry_subscriptions(&conn);
        }
        Ok((generation, conn))
    }

    /// A subscriber's channels, subscribed again on the new primary's connection `conn` (in
    /// the background, bounded), then its push receiver told to check again.
    fn carry_subscriptions(&self, conn: &ConnectionManager) {
        let Some(subscriber) = &self.0.subscriber else {
            return;
        };
        let channels: Vec<String> = subscriber.channels().iter().cloned().collect();
        if channels.is_empty() {
            return;
        }
        let (mut conn, push) = (conn.clone(), subscriber.push.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(RESUBSCRIBE_WITHIN, conn.subscribe(&channels)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "channels not subscribed again"),
                Err(_) => tracing::debug!("channels not subscribed again in time"),
            }
            let _ = push.send(PushInfo {
                kind: PushKind::Disconnection,
                data: Vec::new(),
            });
        });
    }

    /// Runs `op` on the current primary; a failed connection or a node that turned replica
    /// loses the primary for every connection of the cache.
    async fn on_primary<T>(
        &self,
        op: impl AsyncFnOnce(&mut ConnectionManager) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let (generation, mut conn) = self.connection().await?;
        let result = op(&mut conn).await;
        if result.as_ref().is_err_and(loses_primary) {
            self.0.primary.lost(generation);
        }
        result
    }

    /// A pipeline's replies: a `READONLY` among them (a replica's answer to the write in a
    /// pipeline that is not an error as a whole) loses the primary too.
    async fn pipeline_on_primary(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (generation, mut conn) = self.connection().await?;
        let result = conn.req_packed_commands(pipeline, offset, count).await;
        let readonly = |v: &Value| matches!(v, Value::ServerError(e) if e.code() == "READONLY");
        let lost = match &result {
            Ok(replies) => replies.iter().any(readonly),
            Err(e) => loses_primary(e),
        };
        if lost {
            self.0.primary.lost(generation);
        }
        result
    }

    /// The generation of the primary named now (see `primary.rs`).
    pub(crate) fn generation(&self) -> u64 {
        self.0.primary.generation()
    }

    /// Subscribes to `channel`, which from now on follows the primary (until unsubscribed).
    pub(crate) async fn subscribe(&self, channel: &str) -> RedisResult<()> {
        if let Some(subscriber) = &self.0.subscriber {
            subscriber.channels().insert(channel.to_owned());
        }
        self.on_primary(async |conn| conn.subscribe(channel).await)
            .await
    }

    pub(crate) async fn unsubscribe(&self, channel: &str) -> RedisResult<()> {
        if let Some(subscriber) = &self.0.subscriber {
            subscriber.channels().remove(channel);
        }
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
        Box::pin(self.pipeline_on_primary(pipeline, offset, count))
    }
}

/// Whether `error` says the primary is gone: its connection failed, or the node answered as a
/// replica.
fn loses_primary(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.code() == Some("READONLY")
}

/// Moves a subscriber with channels to each new primary as soon as it is named, without
/// waiting for its next call: its waiters are woken by messages published there.
async fn follow_channels(following: std::sync::Weak<Following>, mut changes: primary::Changes) {
    while changes.next().await {
        let Some(inner) = following.upgrade() else {
            return;
        };
        let waited_on = inner
            .subscriber
            .as_ref()
            .is_some_and(|s| !s.channels().is_empty());
        if waited_on {
            let follow = FollowPrimary(inner);
            let _ = tokio::time::timeout(RESUBSCRIBE_WITHIN, follow.connection()).await;
        }
    }
}

impl Following {
    fn current(&self) -> std::sync::MutexGuard<'_, Option<(u64, ConnectionManager)>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Subscriber {
    fn channels(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }
}
