//! A function with `stale` or `refresh = "early"` whose body borrows nothing from its caller
//! refreshes in the background: every caller that finds the entry due, the one that takes the
//! refresh's lease included, is answered with it at once, and the load and its write-back run
//! on in a task of their own (one across all processes), refused like any load if an
//! invalidation overtakes them. A body that uses a borrowed argument refreshes in its caller
//! (`stale.rs`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cached_redis::{Cache, redis_cached};
use cached_redis_tests::stale::{STALE, expire_in};
use cached_redis_tests::{Gate, RedisServer, eventually};
use tokio::sync::mpsc;

static LOADS: AtomicU32 = AtomicU32::new(0);

/// The database: the first load answers at once, later ones wait at `gate`. `gate` is owned
/// (a clone of the test's), so the body borrows nothing: `cache` is not named in it.
#[redis_cached(key = "catalog:<id>", ttl = "60s", stale = "60s", cache = cache, skip = "gate")]
async fn catalog(cache: &Cache, gate: Gate, id: u64) -> Result<String, String> {
    let n = LOADS.fetch_add(1, Ordering::SeqCst);
    if n > 0 {
        gate.passed().await;
    }
    Ok(format!("catalog {id} v{n}"))
}

/// The call's answer, which must come while the refresh is held.
async fn at_once<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("answered while the refresh is held")
}

async fn make_stale(server: &RedisServer, cache: &Cache, id: u64) {
    let mut conn = server.conn().await;
    let left = STALE.as_millis() as u64 / 2;
    assert!(expire_in(&mut conn, &cache.redis_key(&catalog_key(id)), left).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_of_three_processes_is_answered_at_once_while_one_refresh_runs() {
    let server = RedisServer::start();
    let caches = [
        server.cache("bg").await,
        server.cache("bg").await,
        server.cache("bg").await,
    ];
    let gate = Gate::new();
    let first = catalog(&caches[0], gate.clone(), 1).await;
    assert_eq!(first.as_deref(), Ok("catalog 1 v0"));
    caches[0].settle().await;
    make_stale(&server, &caches[0], 1).await;

    let (sender, mut answers) = mpsc::unbounded_channel();
    for cache in &caches {
        for _ in 0..100 {
            let (cache, gate, sender) = (cache.clone(), gate.clone(), sender.clone());
            tokio::spawn(async move {
                let _ = sender.send(catalog(&cache, gate, 1).await);
            });
        }
    }
    // The refresh is held at the gate: all 300 callers are answered before it opens.
    for _ in 0..300 {
        let value = tokio::time::timeout(Duration::from_secs(20), answers.recv())
            .await
            .expect("every caller answered while the refresh is held")
            .unwrap();
        assert_eq!(value.as_deref(), Ok("catalog 1 v0"), "the stale value");
    }
    let loading = || async { LOADS.load(Ordering::SeqCst) == 2 };
    assert!(
        eventually(Duration::from_secs(20), loading).await,
        "one refresh"
    );
    let stats: Vec<_> = caches.iter().map(Cache::stats).collect();
    assert_eq!(
        stats.iter().map(|s| s.refreshes).sum::<u64>(),
        1,
        "{stats:?}"
    );
    assert_eq!(stats.iter().map(|s| s.stale_served).sum::<u64>(), 300);
    gate.open();
    for cache in &caches {
        cache.settle().await;
    }
    // `settle` waited for the background refresh and its write-back.
    let again = catalog(&caches[2], gate.clone(), 1).await;
    assert_eq!(again.as_deref(), Ok("catalog 1 v1"));
    assert_eq!(LOADS.load(Ordering::SeqCst), 2);
}

static RACED_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "stock:<id>", ttl = "60s", stale = "60s", cache = cache, skip = "gate")]
async fn stock(cache: &Cache, gate: Gate, id: u64) -> Result<u32, String> {
    let n = RACED_LOADS.fetch_add(1, Ordering::SeqCst);
    if n > 0 {
        gate.passed().await;
    }
    Ok(u32::try_from(id).unwrap() * 100 + n)
}

/// A background refresh that an invalidation overtook stores nothing, though its caller (and
/// the task) are long gone; the read after the invalidation loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_refresh_an_invalidation_overtook_stores_nothing() {
    let server = RedisServer::start();
    let cache = server.cache("bg-race").await;
    let gate = Gate::new();
    assert_eq!(stock(&cache, gate.clone(), 1).await, Ok(100));
    cache.settle().await;
    let mut conn = server.conn().await;
    let left = STALE.as_millis() as u64 / 2;
    assert!(expire_in(&mut conn, &cache.redis_key(&stock_key(1)), left).await);
    // Answered at once; the refresh's task starts its load, which waits at the gate.
    assert_eq!(at_once(stock(&cache, gate.clone(), 1)).await, Ok(100));
    let loading = || async { RACED_LOADS.load(Ordering::SeqCst) == 2 };
    assert!(eventually(Duration::from_secs(20), loading).await);
    invalidate_stock(&cache, 1).await.unwrap();
    gate.open();
    cache.settle().await;
    assert_eq!(cache.stats().stale_refused, 1, "{:?}", cache.stats());
    assert_eq!(
        stock(&cache, gate.clone(), 1).await,
        Ok(102),
        "loaded after it"
    );
}

static DROPPED_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "price:<id>", ttl = "60s", stale = "60s", cache = cache, skip = "gate")]
async fn price(cache: &Cache, gate: Gate, id: u64) -> Result<u32, String> {
    let n = DROPPED_LOADS.fetch_add(1, Ordering::SeqCst);
    if n > 0 {
        gate.passed().await;
    }
    Ok(u32::try_from(id).unwrap() * 100 + n)
}

/// The caller that started the refresh is cancelled (its future dropped before it is polled
/// again): the refresh runs on and stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_outlives_its_cancelled_caller() {
    let server = RedisServer::start();
    let cache = server.cache("bg-cancel").await;
    let gate = Gate::new();
    assert_eq!(price(&cache, gate.clone(), 1).await, Ok(100));
    cache.settle().await;
    let mut conn = server.conn().await;
    let left = STALE.as_millis() as u64 / 2;
    assert!(expire_in(&mut conn, &cache.redis_key(&price_key(1)), left).await);
    let caller = {
        let (cache, gate) = (cache.clone(), gate.clone());
        tokio::spawn(async move { at_once(price(&cache, gate, 1)).await })
    };
    // Once the refresh's load waits at the gate, the caller is cancelled (if it has not
    // returned already).
    let loading = || async { DROPPED_LOADS.load(Ordering::SeqCst) == 2 };
    assert!(eventually(Duration::from_secs(20), loading).await);
    caller.abort();
    gate.open();
    cache.settle().await;
    assert_eq!(price(&cache, gate, 1).await, Ok(101), "the refresh stored");
}
