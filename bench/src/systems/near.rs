//! cached-redis with its near cache: the cache, the functions that keep their values near, and
//! making sure a key is answered from process memory before a measurement starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cached_redis::{Cache, Stats, redis_cached};

use super::{BenchError, Payload, clients, load};

/// Whether, and how, a process's clients get the near system's cache.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NearCache {
    /// None: the near system cannot be read (children that never read it).
    Off,
    /// `.near_cache(10_000)` with the default lag.
    On,
    /// The same with `near_max_lag(lag)`: the heartbeat runs every fifth of it.
    Lag(Duration),
}

impl NearCache {
    /// The near system's cache, in a namespace of its own (its tracking connection then hears
    /// of no other system's writes).
    pub(super) async fn build(self, url: &str) -> Option<Cache> {
        let builder = Cache::builder(url)
            .namespace("bench-near")
            .near_cache(10_000);
        let builder = match self {
            NearCache::Off => return None,
            NearCache::On => builder,
            NearCache::Lag(lag) => builder.near_max_lag(lag),
        };
        Some(builder.build().await.expect("near cache"))
    }
}

fn cache() -> &'static Cache {
    clients()
        .near
        .as_ref()
        .expect("connected without the near cache")
}

/// The near system's counters.
pub(crate) fn near_stats() -> Stats {
    cache().stats()
}

/// cached-redis near: the cached-redis function with `near = "5s"`, its value an
/// `Arc<Payload>` as the near guide advises (a near hit then copies no payload).
#[redis_cached(key = "p:<size>:<id>", ttl = "10m", near = "5s", cache = cache(), skip = "delay_ms")]
pub(crate) async fn near_get(
    id: u64,
    size: usize,
    delay_ms: u64,
) -> Result<Arc<Payload>, BenchError> {
    load(id, size, delay_ms).await.map(Arc::new)
}

/// The same with the `Payload` by value: each near hit clones it (the instructions scenario
/// only).
#[redis_cached(key = "owned:<size>:<id>", ttl = "10m", near = "5s", cache = cache(), skip = "delay_ms")]
pub(crate) async fn near_owned_get(
    id: u64,
    size: usize,
    delay_ms: u64,
) -> Result<Payload, BenchError> {
    load(id, size, delay_ms).await
}

/// Waits until near copies are served: the tracking connection is up, and a heartbeat has
/// confirmed it (the second one, a fifth of `near_max_lag` after the first).
async fn wait_live() {
    let started = Instant::now();
    while !cache().near_is_live() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the near cache did not go live within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads `id` through `read` until a read is a near hit. The first read loads and writes back,
/// and Redis's message for that write may drop the copy the next read kept.
pub(crate) async fn make_near<F, Fut>(read: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    wait_live().await;
    for _ in 0..1_000 {
        let before = near_stats().near_hits;
        read().await;
        if near_stats().near_hits > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("no near hit after 1,000 reads");
}
