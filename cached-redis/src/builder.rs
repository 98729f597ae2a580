//! Configuring a cache: the builder's options, their validation, and the connections each
//! deployment (one Redis, a cluster, Sentinel) needs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;

use crate::Error;
use crate::cache::{Cache, Inner};
use crate::conn::guard::Guard;
use crate::conn::{Conn, LazyCluster};
use crate::error::redact_url;
use crate::read::flight::Flights;
use crate::read::wake::Wakeups;
use crate::stats::Counters;
use crate::stored::format::{Codec, Compression, Format};
use crate::write::confirm_pool::MakeConn;
use crate::write::replicated::Replicated;
use crate::write::turns::UpdateQueue;

/// Configures a [`Cache`]; created by [`Cache::builder`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Building never needs Redis to be up: the connection is made on first use.
/// let cache = cached_redis::Cache::builder("redis://127.0.0.1:1").build().await;
/// assert!(cache.is_ok());
///
/// let err = cached_redis::Cache::builder("redis://127.0.0.1")
///     .namespace("bad{ns}")
///     .build()
///     .await
///     .unwrap_err();
/// assert!(err.to_string().contains("namespace"));
///
/// let err = cached_redis::Cache::builder("redis://127.0.0.1")
///     .lock_ttl(std::time::Duration::MAX)
///     .build()
///     .await
///     .unwrap_err();
/// assert!(err.to_string().contains("between 1ms and a day"));
/// # }
/// ```
#[derive(Clone)]
pub struct CacheBuilder {
    urls: Vec<String>,
    cluster: bool,
    #[cfg(feature = "sentinel")]
    sentinel: Option<crate::conn::sentinel::Service>,
    #[cfg(feature = "sentinel")]
    node_auth: Option<crate::conn::sentinel::NodeAuth>,
    #[cfg(feature = "tls")]
    tls_root_cert: Option<Vec<u8>>,
    namespace: String,
    op_timeout: Duration,
    lock_ttl: Duration,
    max_load: Option<Duration>,
    replicas: Option<(u32, Duration)>,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    format: Format,
}

/// A deployment's connections: for reads, for writes, for wake-ups, and for invalidations
/// that wait for replicas (if asked for).
struct Connections {
    reads: Conn,
    writes: Conn,
    wakeups: Wakeups,
    replicated: Option<Replicated>,
}

impl Connections {
    /// A disabled cache's: none of them is ever asked.
    fn disabled() -> Result<Connections, Error> {
        Ok(Connections {
            reads: Conn::Disabled,
            writes: Conn::Disabled,
            wakeups: Wakeups::new(|_| Ok(Conn::Disabled))?,
            replicated: None,
        })
    }
}

impl fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field(
                "urls",
                &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .field("namespace", &self.namespace)
            .field("op_timeout", &self.op_timeout)
            .field("lock_ttl", &self.lock_ttl)
            .field("max_load", &self.max_load)
            .field("replicas", &self.replicas)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .finish()
    }
}

impl Cache {
    /// Starts configuring a cache for the Redis at `url` (`redis://[user:password@]host[:port][/db]`,
    /// or `rediss://` for TLS). An empty `url` builds a disabled cache (see
    /// [`Cache::disabled`]), so `Cache::builder(&std::env::var("REDIS_URL")?)` turns caching off
    /// with `REDIS_URL=""`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cached_redis::Error> {
    /// let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    /// let cache = cached_redis::Cache::builder(&url).namespace("myapp").build().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(url: &str) -> CacheBuilder {
        CacheBuilder {
            urls: vec![url.to_owned()],
            cluster: false,
            #[cfg(feature = "sentinel")]
            sentinel: None,
            #[cfg(feature = "sentinel")]
            node_auth: None,
            #[cfg(feature = "tls")]
            tls_root_cert: None,
            namespace: "cache".to_owned(),
            op_timeout: Duration::from_millis(250),
            lock_ttl: Duration::from_secs(5),
            max_load: None,
            replicas: None,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(1),
            format: Format::default(),
        }
    }

    /// Starts configuring a cache on a Redis Cluster, given one or more of its nodes (the rest
    /// are discovered). The same options apply; the cluster is connected on first use, through
    /// redis-rs's async cluster client, which follows slot moves and failovers.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), cached_redis::Error> {
    /// let cache = cached_redis::Cache::cluster_builder(&[
    ///     "redis://10.0.0.1:7000",
    ///     "redis://10.0.0.2:7000",
    /// ])
    /// .namespace("myapp")
    /// .build()
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub fn cluster_builder(urls: &[&str]) -> CacheBuilder {
        CacheBuilder {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            cluster: true,
            ..Cache::builder("")
        }
    }

    /// A cache that never asks Redis, for development and for tests that need none: every
    /// call runs its loader (counted in [`Cache::stats`] as a miss and a load), invalidations
    /// answer `Ok(false)` (bulk ones `Ok(0)`), [`Cache::ttl`] `Ok(None)` and [`Cache::ping`]
    /// `Err(Error::Disabled)`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cached_redis::Error> {
    /// let cache = cached_redis::Cache::disabled();
    /// let key = cached_redis::Key::raw("user:1");
    /// assert!(!cache.invalidate(&key).await?);
    /// assert!(cache.is_disabled());
    /// # Ok(()) }
    /// ```
    pub fn disabled() -> Cache {
        Cache::builder("")
            .assemble()
            .expect("the default options are valid")
    }

    /// Starts configuring a cache on a primary/replica deployment that Redis Sentinel manages,
    /// given one or more sentinels and the master name they monitor. The same options apply.
    /// Reads, writes, wake-ups and replica-confirmed invalidations go to the node the
    /// sentinels name as the primary. When any of them finds it gone (its connection fails,
    /// or it answers `READONLY`), the sentinels are asked again, and every one of them moves
    /// to the primary they name before its next call, so the cache follows a failover
    /// without a restart and sends no write to a primary it knows was replaced. The sentinels
    /// are asked in the background (each attempt bounded on its own, 5 s), not inside a
    /// call's `op_timeout`: a sentinel far away or loaded still gets the cache connected.
    /// Needs the `sentinel` feature.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), cached_redis::Error> {
    /// let cache = cached_redis::Cache::sentinel_builder(
    ///     &["redis://10.0.0.5:26379", "redis://10.0.0.6:26379"],
    ///     "mymaster",
    /// )
    /// .namespace("myapp")
    /// .build()
    /// .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "sentinel")]
    pub fn sentinel_builder(sentinels: &[&str], master: &str) -> CacheBuilder {
        CacheBuilder {
            urls: sentinels.iter().map(|u| (*u).to_owned()).collect(),
            sentinel: Some(crate::conn::sentinel::Service::new(master)),
            ..Cache::builder("")
        }
    }
}

impl CacheBuilder {
    /// Prefix of every key this cache writes (default `"cache"`): values live at
    /// `<namespace>:{<key>}`. It may not contain `{` or `}`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cached_redis::Error> {
    /// let cache = cached_redis::Cache::builder("").namespace("billing").build().await?;
    /// assert_eq!(cache.namespace(), "billing");
    /// # Ok(()) }
    /// ```
    pub fn namespace(mut self, namespace: &str) -> Self {
        namespace.clone_into(&mut self.namespace);
        self
    }

    /// Bound on every Redis call (default 250 ms). A call that takes longer falls back to the
    /// loader.
    ///
    /// ```
    /// let builder = cached_redis::Cache::builder("redis://127.0.0.1:6379")
    ///     .op_timeout(std::time::Duration::from_millis(100));
    /// ```
    pub fn op_timeout(mut self, op_timeout: Duration) -> Self {
        self.op_timeout = op_timeout;
        self
    }

    /// How long one loader may hold an entry's lease before others take over (default 5 s).
    /// Attribute argument `lock_ttl` overrides it per function.
    ///
    /// ```
    /// let builder = cached_redis::Cache::builder("redis://127.0.0.1:6379")
    ///     .lock_ttl(std::time::Duration::from_secs(10)); // loads that take up to ~10 s
    /// ```
    pub fn lock_ttl(mut self, lock_ttl: Duration) -> Self {
        self.lock_ttl = lock_ttl;
        self
    }

    /// How long one load may keep its lease (default: three times the lease TTL in effect, so
    /// 15 s by default). A loader still running past it is not cancelled, and its own caller
    /// still gets its result (not stored), but its lease is released and the callers that
    /// joined it read again: callers here and in other processes load for themselves, so one
    /// hung query does not stall a key everywhere. Attribute argument
    /// `max_load` overrides it per function.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cached_redis::Error> {
    /// let cache = cached_redis::Cache::builder("redis://127.0.0.1:6379")
    ///     .max_load(std::time::Duration::from_secs(30))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn max_load(mut self, max_load: Duration) -> Self {
        self.max_load = Some(max_load);
        self
    }

    /// Makes every invalidation wait until `replicas` replicas have it (`WAIT`, for at most
    /// `within`) and return [`Error::NotReplicated`] when they do not confirm in time. Off by
    /// default: without it, an invalidation acknowledged by a primary that fails before
    /// replicating it is lost, and the promoted replica serves the old value until its TTL.
    /// With it, the writer learns of that window and can retry. What remains: a failover that
    /// promotes a replica other than the ones that confirmed (ask for all of them), and
    /// Redis's own asynchronous replication between the confirmation and a later write.
    /// On a cluster it waits on the entry's own primary; behind Sentinel, on the current one.
    ///
    /// `Ok` means the replicas have the change, on a retry too: every confirmation writes a
    /// mark and waits for it, so it covers every earlier write on the primary, including a
    /// first attempt's removals that left the retry nothing to remove. Each confirmation goes
    /// over a connection of its own (up to 16; hits, write-backs and other confirmations never
    /// queue behind a `WAIT`) and takes at most `within` plus `op_timeout`, a wait for a free
    /// connection included. Their failures count on a breaker of their own, so a confirmation
    /// connection in trouble never stops entries from being stored. `refresh_<fn>` answers
    /// `Err(NotReplicated)`, before loading, when its removal was not confirmed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cached_redis::Error> {
    /// let cache = cached_redis::Cache::builder("redis://127.0.0.1:6379")
    ///     .invalidate_replicas(1, std::time::Duration::from_millis(200))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn invalidate_replicas(mut self, replicas: u32, within: Duration) -> Self {
        self.replicas = Some((replicas, within));
        self
    }

    /// Consecutive failed Redis calls that open the circuit breaker (default 5). While it is
    /// open, calls skip Redis and run the loader.
    ///
    /// ```
    /// let builder = cached_redis::Cache::builder("redis://127.0.0.1:6379").breaker_threshold(3);
    /// ```
    pub fn breaker_threshold(mut self, failures: u32) -> Self {
        self.breaker_threshold = failures;
        self
    }

    /// How long the breaker stays open before one probe call is let through (default 1 s).
    ///
    /// ```
    /// let builder = cached_redis::Cache::builder("redis://127.0.0.1:6379")
    ///     .breaker_cooldown(std::time::Duration::from_millis(500));
    /// ```
    pub fn breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.breaker_cooldown = cooldown;
        self
    }

    /// How values are serialised (default [`Codec::Json`], readable in `redis-cli`); a
    /// function's `codec` (or [`Policy::with_codec`](crate::Policy::with_codec)) overrides it.
    /// Values already stored stay readable: reading understands every codec.
    ///
    /// ```
    /// use cached_redis::{Cache, Codec};
    ///
    /// let builder = Cache::builder("redis://127.0.0.1:6379").codec(Codec::MessagePack);
    /// ```
    pub fn codec(mut self, codec: Codec) -> Self {
        self.format.codec = codec;
        self
    }

    /// Whether large values are compressed (default [`Compression::None`]); a function's
    /// `compress_above` (or [`Policy::with_compression`](crate::Policy::with_compression))
    /// overrides it. zstd needs the `zstd` feature: without it, [`build`](Self::build) fails.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use cached_redis::{Cache, Compression};
    ///
    /// let built = Cache::builder("")
    ///     .compression(Compression::Zstd { above: 16 * 1024 })
    ///     .build()
    ///     .await;
    /// assert_eq!(built.is_ok(), cfg!(feature = "zstd"));
    /// # }
    /// ```
    pub fn compression(mut self, compression: Compression) -> Self {
        self.format.compression = compression;
        self
    }

    /// Trusts this CA certificate (PEM) for `rediss://` connections instead of the system's
    /// roots. Needs the `tls` feature.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read("/etc/redis/ca.crt")?;
    /// let cache = cached_redis::Cache::builder("rediss://cache.internal:6380")
    ///     .tls_root_cert(ca)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_cert = Some(pem.into());
        self
    }

    fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        #[cfg(feature = "tls")]
        if let Some(root_cert) = &self.tls_root_cert {
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert.clone()),
            };
            return redis::Client::build_with_tls(url, certificates);
        }
        redis::Client::open(url)
    }

    /// Behind Sentinel, the credentials of the data nodes (the primary and its replicas);
    /// credentials in the sentinel URLs are the sentinels' own. `username` is `None` for
    /// `requirepass`-style auth. Only for [`Cache::sentinel_builder`]: one Redis or a cluster
    /// takes its credentials in its URLs, and [`CacheBuilder::build`] refuses them here.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), cached_redis::Error> {
    /// let cache = cached_redis::Cache::sentinel_builder(&["redis://10.0.0.5:26379"], "mymaster")
    ///     .node_auth(Some("app"), "s3cret")
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "sentinel")]
    pub fn node_auth(mut self, username: Option<&str>, password: &str) -> Self {
        self.node_auth = Some(crate::conn::sentinel::NodeAuth::new(username, password));
        self
    }

    /// Validates the configuration and creates the cache. It does not connect: an unreachable
    /// Redis does not stop an application from starting, its calls fall back to the loader
    /// until Redis answers. Must be called inside a Tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let wrong = cached_redis::Cache::builder("redis://127.0.0.1:6379").namespace("a{b}").build().await;
    /// assert!(matches!(wrong, Err(cached_redis::Error::InvalidConfig(_))));
    /// # }
    /// ```
    pub async fn build(self) -> Result<Cache, Error> {
        self.assemble()
    }

    /// What [`CacheBuilder::build`] does: nothing in it waits.
    fn assemble(self) -> Result<Cache, Error> {
        let redacted: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        let invalid = |url: &str, e: redis::RedisError| {
            let shown = redact_url(url);
            Error::InvalidUrl {
                reason: e.to_string().replace(url, &shown),
                url: shown,
            }
        };
        self.check_options()?;
        let disabled = self.is_disabled();
        if disabled {
            tracing::warn!("cache disabled (empty Redis URL): every call runs its loader");
        }
        let Connections {
            reads,
            writes,
            wakeups,
            replicated,
        } = if disabled {
            Connections::disabled()?
        } else {
            self.connections(&invalid)?
        };
        Ok(Cache {
            inner: Arc::new(Inner {
                reads,
                writes,
                disabled,
                namespace: self.namespace,
                lock_ttl: self.lock_ttl,
                max_load: self.max_load,
                guard: Guard::new(
                    self.op_timeout,
                    self.breaker_threshold,
                    self.breaker_cooldown,
                ),
                stats: Counters::default(),
                flights: Flights::default(),
                updates: UpdateQueue::default(),
                wakeups,
                replicated,
                format: self.format,
                url: if disabled {
                    "disabled".to_owned()
                } else {
                    redacted.join(",")
                },
            }),
        })
    }

    /// Every option checked, whether or not the cache is disabled: an option that is wrong in
    /// development must not wait for production's URL to fail.
    fn check_options(&self) -> Result<(), Error> {
        if self.urls.is_empty() {
            return Err(Error::InvalidConfig(
                "a cluster needs at least one node url".into(),
            ));
        }
        if self.namespace.contains(['{', '}']) {
            return Err(Error::InvalidConfig(format!(
                "namespace `{}` may not contain `{{` or `}}`",
                self.namespace
            )));
        }
        let max_load = self.max_load.unwrap_or(Duration::from_millis(1));
        for (name, value) in [
            ("op_timeout", self.op_timeout),
            ("lock_ttl", self.lock_ttl),
            ("max_load", max_load),
            (
                "breaker_cooldown",
                self.breaker_cooldown.max(Duration::from_millis(1)),
            ),
        ] {
            if value.as_millis() == 0 || value > crate::policy::LONGEST {
                return Err(Error::InvalidConfig(format!(
                    "{name} must be between 1ms and a day, got {value:?}"
                )));
            }
        }
        self.check_replicas()?;
        self.format.compression.available()?;
        #[cfg(feature = "sentinel")]
        self.sentinel_service()?;
        Ok(())
    }

    /// `invalidate_replicas` asks for at least one replica and a millisecond.
    fn check_replicas(&self) -> Result<(), Error> {
        match self.replicas {
            Some((replicas, within)) if replicas == 0 || within.as_millis() == 0 => {
                Err(Error::InvalidConfig(format!(
                    "invalidate_replicas needs at least one replica and 1ms, got {replicas} and {within:?}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// One Redis whose URL is empty (blank): a disabled cache.
    fn is_disabled(&self) -> bool {
        #[cfg(feature = "sentinel")]
        if self.sentinel.is_some() {
            return false;
        }
        !self.cluster && self.urls.iter().all(|url| url.trim().is_empty())
    }

    /// No retries inside the connection manager: a command during an outage fails at once (and
    /// the next one tries to connect again) instead of waiting out a retry series.
    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.op_timeout.max(Duration::from_millis(500))))
            .set_response_timeout(None)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(0)
    }

    /// The Sentinel service this cache follows, with the data nodes' credentials; refuses
    /// those credentials on a cache not behind Sentinel.
    #[cfg(feature = "sentinel")]
    fn sentinel_service(&self) -> Result<Option<crate::conn::sentinel::Service>, Error> {
        match (&self.sentinel, &self.node_auth) {
            (None, Some(_)) => Err(Error::InvalidConfig(
                "node_auth is for a cache behind Sentinel; give one Redis or a cluster its \
                 credentials in the URL (redis://user:password@host:port)"
                    .into(),
            )),
            (service, auth) => Ok(service.clone().map(|s| s.with_auth(auth.clone()))),
        }
    }

    /// The connections of the deployment configured.
    fn connections(
        &self,
        invalid: &impl Fn(&str, redis::RedisError) -> Error,
    ) -> Result<Connections, Error> {
        #[cfg(feature = "sentinel")]
        if let Some(service) = self.sentinel_service()? {
            return self.sentinel_connections(&service, invalid);
        }
        let (reads, writes, wakeups) = if self.cluster {
            self.cluster_connections(invalid)?
        } else {
            self.single_connections(invalid)?
        };
        let replicated = self.replicated(invalid, writes.publish_command())?;
        Ok(Connections {
            reads,
            writes,
            wakeups,
            replicated,
        })
    }

    /// Behind Sentinel: every connection (reads, writes, wake-ups, replica-acknowledged
    /// invalidations) follows one shared discovery of the primary, so that when one of them
    /// finds the primary replaced, all of them move before their next call.
    #[cfg(feature = "sentinel")]
    fn sentinel_connections(
        &self,
        service: &crate::conn::sentinel::Service,
        invalid: &impl Fn(&str, redis::RedisError) -> Error,
    ) -> Result<Connections, Error> {
        use crate::conn::sentinel::FollowPrimary;
        for url in &self.urls {
            redis::Client::open(url.as_str()).map_err(|e| invalid(url, e))?;
        }
        let primary = service.primary(&self.urls)?;
        let config = self.manager_config();
        let follow = || Conn::Sentinel(FollowPrimary::new(&primary, config.clone()));
        let wakeups = Wakeups::new(|push| {
            let subscriber = FollowPrimary::subscriber(&primary, config.clone(), push);
            Ok(Conn::Sentinel(subscriber))
        })?;
        let writes = follow();
        let publish = writes.publish_command();
        let replicated = self.replicas.map(|(replicas, within)| {
            let (primary, config) = (primary.clone(), config.clone());
            let make: MakeConn =
                Box::new(move || Ok(Conn::Sentinel(FollowPrimary::new(&primary, config.clone()))));
            Replicated::new(make, (replicas, within), &self.namespace, publish)
        });
        Ok(Connections {
            reads: follow(),
            writes,
            wakeups,
            replicated,
        })
    }

    /// Replica-confirmed invalidations on one Redis or a cluster, if asked for (their options
    /// checked by `assemble` first).
    fn replicated(
        &self,
        invalid: &impl Fn(&str, redis::RedisError) -> Error,
        publish: &'static str,
    ) -> Result<Option<Replicated>, Error> {
        let Some((replicas, within)) = self.replicas else {
            return Ok(None);
        };
        let make = self.confirmation_conns(invalid, within)?;
        let namespace = &self.namespace;
        let replicated = Replicated::new(make, (replicas, within), namespace, publish);
        Ok(Some(replicated))
    }

    /// Makes the connections replica confirmations go over, one per confirmation under way:
    /// each like the write connection, to the same primary, connected on first use, with no
    /// reply timeout shorter than a `WAIT` of `within`.
    fn confirmation_conns(
        &self,
        invalid: &impl Fn(&str, redis::RedisError) -> Error,
        within: Duration,
    ) -> Result<MakeConn, Error> {
        if self.cluster {
            let first = &self.urls[0];
            let client = self
                .cluster_builder()
                .response_timeout(self.op_timeout.saturating_add(within))
                .build()
                .map_err(|e| invalid(first, e))?;
            let seed = redis::IntoConnectionInfo::into_connection_info(first.as_str())
                .map_err(|e| invalid(first, e))?;
            return Ok(Box::new(move || {
                Ok(Conn::Cluster(LazyCluster::new(
                    client.clone(),
                    seed.clone(),
                )))
            }));
        }
        let url = &self.urls[0];
        let client = self.client(url).map_err(|e| invalid(url, e))?;
        let config = self.manager_config();
        Ok(Box::new(move || {
            ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                .map(Conn::Single)
        }))
    }

    /// One Redis: auto-reconnecting multiplexed connections for reads and for writes, and a
    /// RESP3 one for wake-ups.
    fn single_connections(
        &self,
        invalid: &impl Fn(&str, redis::RedisError) -> Error,
    ) -> Result<(Conn, Conn, Wakeups), Error> {
        let url = &self.urls[0];
        let client = self.client(url).map_err(|e| invalid(url, e))?;
        let config = self.manager_config();
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        let resp3_info = client.get_connection_info().clone();
        let resp3_redis = resp3_info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let pubsub_client = redis::Client::open(resp3_info.set_redis_settings(resp3_redis))?;
        let wakeups = Wakeups::new(|push| {
            let config = config.set_push_sender(push).set_automatic_resubscription();
            ConnectionManager::new_lazy_with_config(pubsub_client, config).map(Conn::Single)
        })?;
        let writes = ConnectionManager::new_lazy_with_config(client, self.manager_config())?;
        Ok((Conn::Single(conn), Conn::Single(writes), wakeups))
    }

    /// The cluster clients' settings: bounded connecting, replies within `op_timeout`, one
    /// quick retry.
    fn cluster_builder(&self) -> ClusterClientBuilder {
        ClusterClientBuilder::new(self.urls.clone())
            .connection_timeout(self.op_timeout.max(Duration::from_millis(500)))
            .response_timeout(self.op_timeout)
            .retries(1)
            .min_retry_wait(10)
            .max_retry_wait(100)
    }

    /// A cluster: redis-rs's cluster client for reads and for writes (each its own
    /// connections), and a RESP3 one for sharded wake-ups, all connected on first use.
    fn cluster_connections(
        &self,
        invalid: &impl Fn(&str, redis::RedisError) -> Error,
    ) -> Result<(Conn, Conn, Wakeups), Error> {
        #[cfg(feature = "tls")]
        if self.tls_root_cert.is_some() {
            return Err(Error::InvalidConfig(
                "tls_root_cert is not supported for clusters; use rediss:// URLs with a CA the system trusts".into(),
            ));
        }
        for url in &self.urls {
            redis::Client::open(url.as_str()).map_err(|e| invalid(url, e))?;
        }
        let builder = || self.cluster_builder();
        let first = &self.urls[0];
        let client = builder().build().map_err(|e| invalid(first, e))?;
        let seed = redis::IntoConnectionInfo::into_connection_info(first.as_str())
            .map_err(|e| invalid(first, e))?;
        let wakeups = Wakeups::new(|push| {
            builder()
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(push)
                .build()
                .map(|client| Conn::Cluster(LazyCluster::new(client, seed.clone())))
        })?;
        let writes = Conn::Cluster(LazyCluster::new(client.clone(), seed.clone()));
        Ok((
            Conn::Cluster(LazyCluster::new(client, seed)),
            writes,
            wakeups,
        ))
    }
}
