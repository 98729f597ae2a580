//! A disabled cache (`Cache::disabled()`, or `Cache::builder("")`), for development and for
//! tests without Redis: every call runs its loader and is counted, errors come back untouched,
//! invalidations and updates answer `Ok(false)` or `Ok(0)`, and Redis is never asked.

use std::sync::atomic::{AtomicU32, Ordering};

use cached_redis::{Cache, Error, Key, redis_cached};

static LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "user:<id>", ttl = "60s", cache = cache)]
async fn user(cache: &Cache, id: u32) -> Result<u32, String> {
    LOADS.fetch_add(1, Ordering::SeqCst);
    if id == 0 {
        return Err("no user 0".into());
    }
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_cache_runs_every_loader_and_never_asks_redis() {
    let cache = Cache::disabled();
    assert!(cache.is_disabled());
    assert_eq!(user(&cache, 7).await, Ok(7));
    assert_eq!(user(&cache, 7).await, Ok(7));
    assert_eq!(user(&cache, 0).await, Err("no user 0".into()));
    assert_eq!(LOADS.load(Ordering::SeqCst), 3, "every call loads");
    let stats = cache.stats();
    assert_eq!(
        (
            stats.misses,
            stats.loads,
            stats.load_errors,
            stats.redis_errors
        ),
        (3, 3, 1, 0),
        "{stats:?}"
    );
    assert!(!invalidate_user(&cache, 7).await.unwrap());
    assert!(!update_user(&cache, 7, |id| *id += 1).await.unwrap());
    assert_eq!(cache.invalidate_prefix("user:").await.unwrap(), 0);
    assert_eq!(cache.clear().await.unwrap(), 0);
    assert_eq!(cache.ttl(&user_key(7)).await.unwrap(), None);
    assert!(matches!(cache.ping().await, Err(Error::Disabled)));
    assert!(format!("{cache:?}").contains("disabled"), "{cache:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_url_builds_a_disabled_cache() {
    let cache = Cache::builder("").namespace("dev").build().await.unwrap();
    assert!(cache.is_disabled());
    assert!(!cache.invalidate(&Key::raw("x")).await.unwrap());
    let real = Cache::builder("redis://127.0.0.1:1").build().await.unwrap();
    assert!(!real.is_disabled(), "any other URL is a Redis to use");
    let wrong = Cache::builder("")
        .invalidate_replicas(0, std::time::Duration::from_millis(100))
        .build()
        .await;
    assert!(
        matches!(wrong, Err(Error::InvalidConfig(_))),
        "options are checked in development too, not only once a URL is set"
    );
}
