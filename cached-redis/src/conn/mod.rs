//! The connections behind a cache: one Redis (an auto-reconnecting multiplexed connection) or a
//! Redis Cluster (redis-rs's cluster client, connected on first use so that an unreachable
//! cluster does not stop an application from starting).

pub(crate) mod breaker;
pub(crate) mod command;
pub(crate) mod guard;
#[cfg(feature = "sentinel")]
pub(crate) mod sentinel;
pub(crate) mod timer_anchor;
pub(crate) mod topology;

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionAddr, ConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

use topology::Master;

/// A cluster connection made on first use. The connecting runs in a task of its own, retried
/// until it succeeds, and callers wait for it within their own deadline: making it inside a
/// caller's bounded call would start it over at every call, and a discovery slower than one
/// `op_timeout` (a hung node among the seeds costs its connection timeout) would never finish.
/// Once made, it follows slot moves and failovers by itself (a node answering `MOVED` makes it
/// re-read the slot map).
#[derive(Clone)]
pub(crate) struct LazyCluster(Arc<Connecting>);

struct Connecting {
    client: ClusterClient,
    /// The first seed's settings (credentials, TLS), for plain connections to one node.
    seed: ConnectionInfo,
    conn: OnceCell<ClusterConnection>,
    started: std::sync::atomic::AtomicBool,
    made: tokio::sync::Notify,
}

/// The pause between two failed attempts to connect to a cluster.
const RECONNECT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl LazyCluster {
    pub(crate) fn new(client: ClusterClient, seed: ConnectionInfo) -> LazyCluster {
        LazyCluster(Arc::new(Connecting {
            client,
            seed,
            conn: OnceCell::new(),
            started: std::sync::atomic::AtomicBool::new(false),
            made: tokio::sync::Notify::new(),
        }))
    }

    /// The connection, once made; waits for it (callers bound the wait).
    pub(crate) async fn get(&self) -> RedisResult<ClusterConnection> {
        let inner = &self.0;
        loop {
            let made = inner.made.notified();
            if let Some(conn) = inner.conn.get() {
                return Ok(conn.clone());
            }
            if !inner
                .started
                .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                tokio::spawn(connect(Arc::downgrade(inner)));
            }
            made.await;
        }
    }

    /// The masters to scan, from a random node's `CLUSTER NODES` (see
    /// [`topology::masters`]).
    pub(crate) async fn masters(&self) -> RedisResult<Vec<Master>> {
        let mut conn = self.get().await?;
        let random = redis::cluster_routing::RoutingInfo::SingleNode(
            redis::cluster_routing::SingleNodeRoutingInfo::Random,
        );
        let nodes = conn
            .route_command(redis::cmd("CLUSTER").arg("NODES").clone(), random)
            .await?;
        let text: String = redis::from_redis_value(nodes)?;
        topology::masters(&text).map_err(|uncovered| {
            redis::RedisError::from((
                redis::ErrorKind::Client,
                "a bulk removal cannot reach every slot",
                uncovered,
            ))
        })
    }

    /// A plain connection to one master, with the seeds' credentials and TLS settings. Bulk
    /// removals scan each master over one of these: routing through the cluster connection by
    /// address fails until its slot map has caught up with a failover (over a minute on a
    /// loaded machine), and a connection that reconnected by itself mid-scan could continue a
    /// cursor on a server that does not know it.
    pub(crate) async fn direct(&self, master: &Master) -> RedisResult<MultiplexedConnection> {
        let client = self.node_client(master, redis::ProtocolVersion::RESP2)?;
        // No reply timeout of redis-rs's own (500 ms): every call over it is bounded by its
        // caller, and a replica confirmation's `WAIT` is held for `within` on purpose.
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// A client for one node, with the first seed's settings (credentials, TLS) and
    /// `protocol`.
    pub(crate) fn node_client(
        &self,
        master: &Master,
        protocol: redis::ProtocolVersion,
    ) -> RedisResult<redis::Client> {
        let seed = &self.0.seed;
        let (host, port) = (master.host.clone(), master.port);
        let addr = match seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        let settings = seed.redis_settings().clone().set_protocol(protocol);
        redis::Client::open(seed.clone().set_addr(addr).set_redis_settings(settings))
    }
}

/// Connects until it succeeds, or until the cache is dropped.
async fn connect(connecting: std::sync::Weak<Connecting>) {
    loop {
        let Some(inner) = connecting.upgrade() else {
            return;
        };
        match inner.client.get_async_connection().await {
            Ok(conn) => {
                let _ = inner.conn.set(conn);
                inner.made.notify_waiters();
                return;
            }
            Err(error) => tracing::debug!(%error, "cluster not reachable yet; retrying"),
        }
        drop(inner);
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}

/// Commands to one Redis or to a cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    /// A disabled cache's: it is never asked (the cache answers before it would be), and
    /// refuses if it is.
    Disabled,
    Single(ConnectionManager),
    Cluster(LazyCluster),
    #[cfg(feature = "sentinel")]
    Sentinel(crate::conn::sentinel::FollowPrimary),
}

impl Conn {
    /// Behind Sentinel, which primary the cache follows now (a number that changes with every
    /// primary named or lost); `None` elsewhere. A call spanning several commands that sees it
    /// change cannot be sure they all reached one node.
    pub(crate) fn primary_generation(&self) -> Option<u64> {
        match self {
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(follow) => Some(follow.generation()),
            _ => None,
        }
    }

    /// The publish command scripts use to wake waiters: sharded on a cluster, so a message
    /// reaches only the shard that owns the entry's slot.
    pub(crate) fn publish_command(&self) -> &'static str {
        match self {
            Conn::Cluster(_) => "SPUBLISH",
            _ => "PUBLISH",
        }
    }

    /// Boxed, like every command future of redis-rs's own connections: connecting (behind
    /// Sentinel, asking the sentinels first) nests deep, and a waiter's future must stay
    /// shallow enough for the compiler to lay out inside a user's function.
    pub(crate) fn subscribe<'a>(&'a self, channel: &'a str) -> RedisFuture<'a, ()> {
        Box::pin(async move {
            match self {
                Conn::Disabled => Err(disabled()),
                Conn::Single(conn) => conn.clone().subscribe(channel).await,
                Conn::Cluster(lazy) => lazy.get().await?.ssubscribe(channel).await,
                #[cfg(feature = "sentinel")]
                Conn::Sentinel(follow) => follow.subscribe(channel).await,
            }
        })
    }

    pub(crate) fn unsubscribe<'a>(&'a self, channel: &'a str) -> RedisFuture<'a, ()> {
        Box::pin(async move {
            match self {
                Conn::Disabled => Err(disabled()),
                Conn::Single(conn) => conn.clone().unsubscribe(channel).await,
                Conn::Cluster(lazy) => lazy.get().await?.sunsubscribe(channel).await,
                #[cfg(feature = "sentinel")]
                Conn::Sentinel(follow) => follow.unsubscribe(channel).await,
            }
        })
    }

    /// Sends `pipe` as one unit over one connection to the node that owns `key` (on a
    /// cluster, its slot's primary): for commands such as `WAIT` that must follow the write
    /// they are about on the same connection.
    pub(crate) async fn pipeline_at(&self, key: &str, pipe: Pipeline) -> RedisResult<Vec<Value>> {
        use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
        let count = pipe.len();
        match self {
            Conn::Cluster(lazy) => {
                let owner =
                    SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
                lazy.get()
                    .await?
                    .route_pipeline(pipe, 0, count, owner)
                    .await
            }
            conn => conn.clone().req_packed_commands(&pipe, 0, count).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Disabled => Box::pin(async { Err(disabled()) }),
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(lazy) => {
                Box::pin(async move { lazy.get().await?.req_packed_command(cmd).await })
            }
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(follow) => follow.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Disabled => Box::pin(async { Err(disabled()) }),
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(lazy) => Box::pin(async move {
                lazy.get()
                    .await?
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(follow) => follow.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            _ => 0,
        }
    }
}

fn disabled() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, "the cache is disabled"))
}
