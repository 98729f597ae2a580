//! The near cache's options, their validation, and starting it on the deployment's nodes.

use std::time::Duration;

use super::CacheBuilder;
use crate::Error;
use crate::read::near::{Near, Nodes, Options as NearOptions, Settings as NearSettings};

/// The lag a near cache allows unless told otherwise.
const DEFAULT_NEAR_LAG: Duration = Duration::from_millis(500);

/// The longest `near_by_default` takes: what `Policy::with_near` takes.
const A_DAY: Duration = Duration::from_secs(24 * 60 * 60);

impl CacheBuilder {
    /// Keeps up to `entries` decoded values in this process's memory, for the functions with
    /// `near = "..."` (and [`Policy::with_near`](crate::Policy::with_near)), or every function
    /// with [`near_by_default`](CacheBuilder::near_by_default): their hits then ask Redis
    /// nothing. Copies are dropped when Redis reports their key written, expired or
    /// removed, by any client (server-assisted client-side caching, `CLIENT TRACKING` on a
    /// RESP3 connection of the near cache's own), and all at once when that connection is lost
    /// or misses a heartbeat; a copy never outlives its entry's Redis TTL. On a cluster every
    /// master is tracked, behind Sentinel the primary it names; a failover or a master added
    /// or removed flushes every copy.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cached_redis::Error> {
    /// let cache = cached_redis::Cache::builder("redis://127.0.0.1:6379")
    ///     .near_cache(10_000)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn near_cache(mut self, entries: usize) -> Self {
        self.near_options().entries = entries;
        self
    }

    /// The longest a near copy is served after Redis sent its invalidation, whatever happens
    /// to the tracking connection (default 500 ms): the near cache pings Redis every fifth of
    /// it, and serves copies only while a ping sent within it confirmed that every
    /// invalidation before it was applied. A silent connection (a black hole, a paused
    /// Redis, a starved runtime) therefore stops near hits within this bound; invalidations
    /// that arrive normally apply in well under a millisecond. Between 10 ms and a minute.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cached_redis::Error> {
    /// let cache = cached_redis::Cache::builder("redis://127.0.0.1:6379")
    ///     .near_cache(10_000)
    ///     .near_max_lag(std::time::Duration::from_millis(200))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn near_max_lag(mut self, lag: Duration) -> Self {
        self.near_options().lag = lag;
        self
    }

    /// Keeps the values of every cached function of this cache near for at most `keep_for`,
    /// as if each had `near = "..."` (never past the entry's Redis TTL), on the near cache
    /// [`near_cache`](CacheBuilder::near_cache) sets up. A function whose attribute says
    /// `near` keeps its own time, and `near = "off"` keeps nothing. Values must be
    /// `Clone + Send + Sync + 'static` to be kept: a function whose values are not reads Redis
    /// on every call, as without this option, and so does one whose return type borrows, or
    /// names `Self`, its generic parameters or its `impl`'s (see the
    /// [near cache's guide](crate::guide::near)). Between 1 ms and a day.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cached_redis::Error> {
    /// let cache = cached_redis::Cache::builder("redis://127.0.0.1:6379")
    ///     .near_cache(10_000)
    ///     .near_by_default(std::time::Duration::from_secs(5))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn near_by_default(mut self, keep_for: Duration) -> Self {
        self.near_options().by_default = Some(keep_for);
        self
    }

    /// The near cache's options, set to their defaults if none was given yet (no entries:
    /// [`check_near`](CacheBuilder::check_near) asks for `near_cache`).
    fn near_options(&mut self) -> &mut NearOptions {
        self.near.get_or_insert(NearOptions {
            entries: 0,
            lag: DEFAULT_NEAR_LAG,
            by_default: None,
        })
    }

    /// The near cache, if asked for, tracking `nodes` (where the entries live).
    pub(super) fn near(&self, nodes: Option<Nodes>) -> Option<Near> {
        let options = self.near?;
        Some(Near::start(NearSettings {
            options,
            nodes: nodes?,
            namespace: self.namespace.clone(),
            connect_timeout: self.op_timeout.max(Duration::from_millis(500)),
        }))
    }

    /// `near_cache` asks for at least one entry; `near_max_lag` is between 10 ms and a minute;
    /// `near_by_default` between 1 ms and a day.
    pub(super) fn check_near(&self) -> Result<(), Error> {
        let Some(options) = self.near else {
            return Ok(());
        };
        if options.entries == 0 {
            let asked = if options.by_default.is_some() {
                "near_by_default"
            } else {
                "near_max_lag"
            };
            return Err(Error::InvalidConfig(format!(
                "near_cache needs room for at least one entry (call near_cache(entries) with {asked})"
            )));
        }
        let lag = options.lag;
        if lag < Duration::from_millis(10) || lag > Duration::from_secs(60) {
            return Err(Error::InvalidConfig(format!(
                "near_max_lag must be between 10ms and a minute, got {lag:?}"
            )));
        }
        match options.by_default {
            Some(keep) if keep < Duration::from_millis(1) || keep > A_DAY => {
                Err(Error::InvalidConfig(format!(
                    "near_by_default must be between 1ms and a day, got {keep:?}"
                )))
            }
            _ => Ok(()),
        }
    }
}
