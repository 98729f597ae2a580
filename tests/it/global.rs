//! The default cache: before `set_global`, calls run the loader and invalidation reports
//! `NotConfigured`; after it, calls go through the installed cache. One test, because the
//! global is process-wide.

use std::sync::atomic::{AtomicU32, Ordering};

use cached_redis::{Error, redis_cached};
use cached_redis_tests::RedisServer;

static LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "greeting:<name>", ttl = "60s")]
async fn greeting(name: &str) -> String {
    LOADS.fetch_add(1, Ordering::SeqCst);
    format!("hello {name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cache_the_loader_runs_and_with_one_the_cache_is_used() {
    assert!(cached_redis::global().is_none());
    assert_eq!(greeting("ada").await, "hello ada");
    assert_eq!(greeting("ada").await, "hello ada");
    assert_eq!(LOADS.load(Ordering::SeqCst), 2, "uncached without a cache");
    assert!(matches!(
        invalidate_greeting("ada").await,
        Err(Error::NotConfigured)
    ));

    let server = RedisServer::start();
    let cache = server.cache("global").await;
    cached_redis::set_global(cache.clone());
    assert_eq!(greeting("ada").await, "hello ada");
    assert_eq!(greeting("ada").await, "hello ada");
    assert_eq!(LOADS.load(Ordering::SeqCst), 3, "cached once installed");
    assert_eq!(cache.stats().hits, 1);
    assert!(invalidate_greeting("ada").await.unwrap());
}
