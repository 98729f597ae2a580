//! oxcache: a moka L1 in front of Redis, configured as a user after memory-speed hits would:
//! a `ChainCache` of a `MokaMemoryBackend` (10,000 entries, 5 s TTL, like our `near = "5s"`)
//! and a `RedisBackend`, backfilling the L1 from Redis, entries kept 10 minutes, read through
//! `Cache::get_or`. oxcache 0.5.0-rc.1 has no message from Redis or from other processes:
//! its L1 copies are dropped only by their TTL or by this process's own writes and deletes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use oxcache::backend::{MokaMemoryBackend, RedisBackend};
use oxcache::cache::{ChainCache, ChainLink};
use oxcache::infra::GLOBAL_UNIFIED_METRICS;
use oxcache::{Cache, OxCacheError};

use super::{BenchError, LOADS, Payload, clients, load};

/// The oxcache system's cache: JSON in both levels, decoded on every read.
pub(crate) type OxCache = Cache<String, Payload>;

/// oxcache's two levels on `url`. Its keys carry a prefix of their own, `bench-ox:` (oxcache
/// has no namespace setting of its own).
pub(super) async fn build(url: &str) -> OxCache {
    let l1 = MokaMemoryBackend::builder()
        .capacity(10_000)
        .ttl(Duration::from_secs(5))
        .build();
    let l2 = RedisBackend::builder()
        .connection_string(url)
        .build()
        .await
        .expect("oxcache's Redis backend (is OXCACHE_ALLOW_INSECURE_REDIS set?)");
    let chain = ChainCache::builder()
        .link(ChainLink::from_backend(l1))
        .link(ChainLink::from_backend(l2))
        .default_time_to_live(Duration::from_secs(600))
        .enable_backfill()
        .build();
    Cache::builder()
        .backend_arc(Arc::new(chain))
        .build()
        .await
        .expect("oxcache")
}

/// oxcache (moka L1 + Redis): `get_or`, its cache-aside read: the L1, then Redis (a hit there is
/// written back to the L1), and on a miss the loader, whose value it writes to both.
pub(crate) async fn oxcache_get(
    id: u64,
    size: usize,
    delay_ms: u64,
) -> Result<Payload, BenchError> {
    let cache = clients()
        .oxcache
        .as_ref()
        .expect("connected without oxcache");
    cache
        .get_or(&format!("bench-ox:p:{size}:{id}"), || async move {
            load(id, size, delay_ms)
                .await
                .map_err(|e| OxCacheError::Operation(e.0))
        })
        .await
        .map_err(|e| BenchError(format!("oxcache: {e}")))
}

/// Reads in this process that oxcache did not answer from its L1 so far: its backfills from
/// Redis (oxcache's own counter) and the loads (every system's: only meaningful as a difference
/// over a measurement of oxcache alone).
pub(crate) fn ox_l1_misses() -> u64 {
    let counters = GLOBAL_UNIFIED_METRICS.get_counters();
    counters.backfill_success + counters.backfill_failed + LOADS.load(Ordering::Relaxed)
}
