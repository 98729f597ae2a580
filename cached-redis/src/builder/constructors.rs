//! Where a cache comes from: [`Cache::builder`] and its cluster and Sentinel kin start a
//! [`CacheBuilder`], [`Cache::disabled`] needs none, and each ends in the assembly of a
//! [`Cache`] from checked options and the connections its deployment needs.

use std::sync::Arc;
use std::time::Duration;

use super::CacheBuilder;
use super::connect::Connections;
use crate::Error;
use crate::cache::{Cache, Inner};
use crate::conn::guard::Guard;
use crate::error::redact_url;
use crate::memory::Memory;
use crate::read::flight::Flights;
use crate::read::write_backs::WriteBacks;
use crate::stats::Counters;
use crate::stored::format::Format;
use crate::write::pending::Pending;
use crate::write::turns::UpdateQueue;

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
            near: None,
            memory: None,
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

    /// A cache that keeps its entries in this process's memory, at most `entries` of them:
    /// the same engine (TTL and jitter, one load per key, `none_ttl`, invalidation that
    /// refuses a racing load's store, `update_*`, `invalidate_all_*`, prefixes, stats), with no
    /// Redis. For tests, single-instance services, and memoisation. `Cache::builder("mem://")`
    /// is the same with 10,000 entries. Entries are stored encoded, so any value type works
    /// and each hit decodes its own copy.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use cached_redis::{Cache, Key, Policy};
    ///
    /// let cache = Cache::in_memory(1_000);
    /// let policy = Policy::new("square", Duration::from_secs(60)).unwrap();
    /// let key = Key::raw("square:7");
    /// let first: Result<u64, String> = cache.fetch(&key, &policy, async { Ok(49) }).await;
    /// let again: Result<u64, String> = cache.fetch(&key, &policy, async { Ok(0) }).await;
    /// assert_eq!((first, again), (Ok(49), Ok(49)));
    /// assert_eq!(cache.stats().hits, 1);
    /// # }
    /// ```
    pub fn in_memory(entries: usize) -> Cache {
        CacheBuilder {
            memory: Some(entries.max(1)),
            ..Cache::builder("mem://")
        }
        .assemble()
        .expect("the default options are valid")
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

/// The URL a cache's `Debug` shows: its URLs with passwords redacted, or what it is instead.
fn shown_url(disabled: bool, in_memory: bool, redacted: &[String]) -> String {
    if disabled {
        "disabled".to_owned()
    } else if in_memory {
        "mem://".to_owned()
    } else {
        redacted.join(",")
    }
}

/// Entries of a `mem://` cache.
const MEMORY_ENTRIES: usize = 10_000;

impl CacheBuilder {
    /// How many entries an in-memory cache keeps, if this is one (`Cache::in_memory`, or
    /// the URL `mem://`).
    fn in_memory(&self) -> Option<usize> {
        let mem = self.urls.len() == 1 && self.urls[0] == "mem://";
        self.memory.or(mem.then_some(MEMORY_ENTRIES))
    }

    /// What [`CacheBuilder::build`] does: nothing in it waits.
    pub(super) fn assemble(self) -> Result<Cache, Error> {
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
        let in_memory = self.in_memory();
        if disabled {
            tracing::warn!("cache disabled (empty Redis URL): every call runs its loader");
        }
        let Connections {
            reads,
            writes,
            wakeups,
            replicated,
            nodes,
        } = if disabled || in_memory.is_some() {
            Connections::disabled()?
        } else {
            self.settings().connections(&invalid)?
        };
        let memory = in_memory.map(Memory::new);
        let near = if memory.is_some() {
            None
        } else {
            self.near(nodes)
        };
        Ok(Cache {
            inner: Arc::new(Inner {
                reads,
                writes,
                disabled,
                namespace: self.namespace.clone(),
                lock_ttl: self.lock_ttl,
                max_load: self.max_load,
                guard: Guard::new(
                    self.op_timeout,
                    self.breaker_threshold,
                    self.breaker_cooldown,
                ),
                stats: Counters::default(),
                flights: Flights::default(),
                write_backs: WriteBacks::on_this_runtime(),
                updates: UpdateQueue::default(),
                wakeups,
                near,
                memory,
                pending: Pending::new(&self.namespace),
                first_reads: crate::read::score::FirstReads::new(),
                back_off: Default::default(),
                replaying: Default::default(),
                replicated,
                format: self.format,
                url: shown_url(disabled, in_memory.is_some(), &redacted),
            }),
        })
    }
}
