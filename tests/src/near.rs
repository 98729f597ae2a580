//! Near-cache helpers: a cache with one, live, and calls repeated until one is a near hit.

use std::future::Future;
use std::time::Duration;

use cached_redis::Cache;

use crate::eventually;

/// A cache on `url` with a near cache allowing `lag`, once its tracking connection is live.
pub async fn near_cache(url: &str, namespace: &str, lag: Duration) -> Cache {
    let cache = Cache::builder(url)
        .namespace(namespace)
        .op_timeout(Duration::from_secs(5))
        .near_cache(1_000)
        .near_max_lag(lag)
        .build()
        .await
        .expect("valid cache configuration");
    assert!(
        eventually(Duration::from_secs(10), || async { cache.near_is_live() }).await,
        "the tracking connection comes up"
    );
    cache
}

/// Makes `call` until one is a near hit of `cache` (the message for a value's own write-back
/// may drop the copy the next read kept, so the first Redis hit is not always kept).
pub async fn until_near_hit<F, Fut>(cache: &Cache, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let kept = eventually(Duration::from_secs(10), || {
        let before = cache.stats().near_hits;
        let called = call();
        async move {
            called.await;
            cache.stats().near_hits > before
        }
    })
    .await;
    assert!(kept, "a call is a near hit");
}
