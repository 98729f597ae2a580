//! The near cache's options, their validation, and starting it on the deployment's nodes.

use std::time::Duration;

use super::CacheBuilder;
use crate::Error;
use crate::read::near::{Near, Nodes, Settings as NearSettings};

/// The lag a near cache allows unless told otherwise.
const DEFAULT_NEAR_LAG: Duration = Duration::from_millis(500);

impl CacheBuilder {
    /// Keeps up to `entries` decoded values in this process's memory, for the functions with
    /// `near = "..."` (and [`Policy::with_near`](crate::Policy::with_near)): their hits then
    /// ask Redis nothing. Copies are dropped when Redis reports their key written, expired or
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
        let lag = self.near.map_or(DEFAULT_NEAR_LAG, |(_, lag)| lag);
        self.near = Some((entries, lag));
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
        let entries = self.near.map_or(0, |(entries, _)| entries);
        self.near = Some((entries, lag));
        self
    }

    /// The near cache, if asked for, tracking `nodes` (where the entries live).
    pub(super) fn near(&self, nodes: Option<Nodes>) -> Option<Near> {
        let (entries, lag) = self.near?;
        Some(Near::start(NearSettings {
            entries,
            lag,
            nodes: nodes?,
            namespace: self.namespace.clone(),
            connect_timeout: self.op_timeout.max(Duration::from_millis(500)),
        }))
    }

    /// `near_cache` asks for at least one entry; `near_max_lag` is between 10 ms and a minute.
    pub(super) fn check_near(&self) -> Result<(), Error> {
        match self.near {
            Some((0, _)) => Err(Error::InvalidConfig(
                "near_cache needs room for at least one entry (call near_cache(entries) with near_max_lag)".into(),
            )),
            Some((_, lag)) if lag < Duration::from_millis(10) || lag > Duration::from_secs(60) => {
                Err(Error::InvalidConfig(format!(
                    "near_max_lag must be between 10ms and a minute, got {lag:?}"
                )))
            }
            _ => Ok(()),
        }
    }
}
