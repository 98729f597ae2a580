//! The near cache's options, their validation, and starting it for a deployment that can
//! have one (one Redis).

use std::time::Duration;

use super::CacheBuilder;
use crate::Error;
use crate::read::near::{Near, Settings as NearSettings};

/// The lag a near cache allows unless told otherwise.
const DEFAULT_NEAR_LAG: Duration = Duration::from_millis(500);

impl CacheBuilder {
    /// Keeps up to `entries` decoded values in this process's memory, for the functions with
    /// `near = "..."` (and [`Policy::with_near`](crate::Policy::with_near)): their hits then
    /// ask Redis nothing. Copies are dropped when Redis reports their key written, expired or
    /// removed, by any client (server-assisted client-side caching, `CLIENT TRACKING` on a
    /// RESP3 connection of the near cache's own), and all at once when that connection is lost
    /// or misses a heartbeat; a copy never outlives its entry's Redis TTL. For one Redis:
    /// on a cluster or behind Sentinel the near cache is off (hits go to Redis), with a
    /// warning.
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

    /// The near cache, if asked for and possible: on one Redis (`resp3`: a RESP3 client for
    /// it), not on a cluster or behind Sentinel.
    pub(super) fn near(&self, resp3: Option<redis::Client>) -> Option<Near> {
        let (entries, lag) = self.near?;
        let Some(client) = resp3 else {
            if !self.is_disabled() {
                tracing::warn!(
                    "near_cache is for one Redis: on a cluster or behind Sentinel it is off, and hits go to Redis"
                );
            }
            return None;
        };
        Some(Near::start(NearSettings {
            entries,
            lag,
            client,
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
