//! Configuring a cache: the builder's options and their validation. The constructors that
//! start a builder, and the assembly of a cache from its options, are in [`constructors`]; the
//! connections each deployment (one Redis, a cluster, Sentinel) needs are made in [`connect`].

mod connect;
mod constructors;
mod near;

use std::fmt;
use std::time::Duration;

use connect::Settings;

use crate::Error;
use crate::cache::Cache;
use crate::error::redact_url;
use crate::stored::format::{Codec, Compression, Format};

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
    /// The near cache's options, if one is asked for.
    near: Option<crate::read::near::Options>,
    /// Set by [`Cache::in_memory`]: the bound on entries of a cache with no Redis.
    memory: Option<usize>,
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
            .field("near", &self.near)
            .finish()
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
        self.check_near()?;
        self.format.compression.available()?;
        #[cfg(feature = "sentinel")]
        self.settings().sentinel_service()?;
        Ok(())
    }

    /// What making the connections takes from these options.
    fn settings(&self) -> Settings<'_> {
        Settings {
            urls: &self.urls,
            cluster: self.cluster,
            #[cfg(feature = "sentinel")]
            sentinel: self.sentinel.as_ref(),
            #[cfg(feature = "sentinel")]
            node_auth: self.node_auth.as_ref(),
            #[cfg(feature = "tls")]
            tls_root_cert: self.tls_root_cert.as_deref(),
            namespace: &self.namespace,
            op_timeout: self.op_timeout,
            replicas: self.replicas,
        }
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
}
