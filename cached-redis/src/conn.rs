//! The connections behind a cache: one Redis (an auto-reconnecting multiplexed connection) or a
//! Redis Cluster (redis-rs's cluster client, connected on first use so that an unreachable
//! cluster does not stop an application from starting).

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionAddr, ConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

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

    /// A plain connection to the node at `host:port`, with the seeds' credentials and TLS
    /// settings. Bulk removals scan each primary over one of these: routing through the
    /// cluster connection by address fails until its slot map has caught up with a failover,
    /// which on a loaded machine took it over a minute.
    async fn direct(&self, host: &str, port: u16) -> RedisResult<Conn> {
        let seed = &self.0.seed;
        let addr = match seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        let client = redis::Client::open(seed.clone().set_addr(addr))?;
        // No retries: a node that fails mid-removal fails the call, which the caller retries.
        let config = redis::aio::ConnectionManagerConfig::new().set_number_of_retries(0);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Conn::Single(conn))
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
    Single(ConnectionManager),
    Cluster(LazyCluster),
    #[cfg(feature = "sentinel")]
    Sentinel(crate::sentinel::FollowPrimary),
}

impl Conn {
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
                Conn::Single(conn) => conn.clone().unsubscribe(channel).await,
                Conn::Cluster(lazy) => lazy.get().await?.sunsubscribe(channel).await,
                #[cfg(feature = "sentinel")]
                Conn::Sentinel(follow) => follow.unsubscribe(channel).await,
            }
        })
    }

    /// The addresses (`host`, `port`) of the primaries: the one node, or every cluster primary.
    pub(crate) async fn primaries(&self) -> RedisResult<Vec<Option<(String, u16)>>> {
        let Conn::Cluster(lazy) = self else {
            return Ok(vec![None]);
        };
        let mut conn = lazy.get().await?;
        let nodes = conn
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                redis::cluster_routing::RoutingInfo::SingleNode(
                    redis::cluster_routing::SingleNodeRoutingInfo::Random,
                ),
            )
            .await?;
        let text: String = redis::from_redis_value(nodes)?;
        let primaries = parse_primaries(&text).map_err(|uncovered| {
            redis::RedisError::from((
                redis::ErrorKind::Client,
                "a bulk removal cannot reach every slot",
                uncovered,
            ))
        })?;
        Ok(primaries.into_iter().map(Some).collect())
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

    /// The connections a bulk removal scans and unlinks over on `node` (`None`: the one node
    /// behind `reads` and `writes`); on a cluster, one plain connection to that node for both.
    pub(crate) async fn bulk_at(
        reads: &Conn,
        writes: &Conn,
        node: &Option<(String, u16)>,
    ) -> RedisResult<(Conn, Conn)> {
        match (reads, node) {
            (Conn::Cluster(lazy), Some((host, port))) => {
                let conn = lazy.direct(host, *port).await?;
                Ok((conn.clone(), conn))
            }
            _ => Ok((reads.clone(), writes.clone())),
        }
    }
}

/// Primaries from `CLUSTER NODES`: lines `<id> <host:port@cport> <flags> ...`.
/// Only primaries that serve slots and are not known to have failed (`fail`, `noaddr`) count;
/// one merely suspected (`fail?`) is kept, to be scanned or to fail the call. Unless those
/// primaries cover every slot, an entry may live where no scan can reach: an `Err`.
fn parse_primaries(nodes: &str) -> Result<Vec<(String, u16)>, String> {
    let mut primaries = Vec::new();
    let mut covered = 0usize;
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, address, flags, ..] = fields.as_slice() else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|f| matches!(*f, "fail" | "noaddr")) {
            continue;
        }
        let slots: usize = fields.iter().skip(8).map(|range| slot_count(range)).sum();
        let Some((host, port)) = address.split('@').next().and_then(|a| a.rsplit_once(':')) else {
            continue;
        };
        let Ok(port) = port.parse() else { continue };
        if slots > 0 {
            covered += slots;
            primaries.push((host.to_owned(), port));
        }
    }
    if covered < 16384 {
        return Err(format!(
            "{} of 16384 slots have no reachable primary (failed over, not yet promoted)",
            16384 - covered
        ));
    }
    Ok(primaries)
}

/// How many slots a `CLUSTER NODES` slot field names: `5461`, `0-5460`; a migration in
/// brackets counts none (the slot is counted at its owner).
fn slot_count(range: &str) -> usize {
    if range.starts_with('[') {
        return 0;
    }
    match range.split_once('-') {
        Some((from, to)) => match (from.parse::<usize>(), to.parse::<usize>()) {
            (Ok(from), Ok(to)) if to >= from => to - from + 1,
            _ => 0,
        },
        None => usize::from(range.parse::<usize>().is_ok()),
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
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

#[cfg(test)]
mod tests {
    #[test]
    fn primaries_come_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10921 10922 [10923->-d4]
c3 127.0.0.1:7003@17003 slave a1 0 0 1 connected
d4 127.0.0.1:7002@17002 master,fail? - 0 0 3 connected 10923-16383
e5 127.0.0.1:7004@17004 master,fail - 0 0 3 disconnected
";
        assert_eq!(
            super::parse_primaries(nodes),
            Ok(vec![
                ("127.0.0.1".to_owned(), 7000),
                ("127.0.0.1".to_owned(), 7001),
                ("127.0.0.1".to_owned(), 7002)
            ]),
            "a suspected primary is scanned (or fails the call)"
        );
        let down = nodes.replace("master,fail? ", "master,fail ");
        assert!(
            super::parse_primaries(&down).is_err(),
            "slots whose primary failed are not silently skipped"
        );
    }
}
