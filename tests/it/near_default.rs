//! `near_by_default`: every function of the cache keeps its values near without saying so,
//! where its values can be copied; `near = "off"` and values that cannot be copied read Redis;
//! a function's own `near` keeps its own time; the option is checked when the cache is built.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cached_redis::{Cache, Error, redis_cached};
use cached_redis_tests::{RedisServer, command_calls, near_by_default_cache, until_near_hit};
use serde::{Deserialize, Serialize};

#[redis_cached(key = "plain:<id>", ttl = "60s", cache = cache)]
async fn plain(cache: &Cache, loads: &AtomicU32, id: u32) -> Result<u64, String> {
    loads.fetch_add(1, Ordering::SeqCst);
    Ok(u64::from(id) * 10)
}

#[redis_cached(key = "off:<id>", ttl = "60s", near = "off", cache = cache)]
async fn off(cache: &Cache, id: u32) -> Result<u64, String> {
    Ok(u64::from(id))
}

#[redis_cached(key = "short:<id>", ttl = "60s", near = "1ms", cache = cache)]
async fn short(cache: &Cache, id: u32) -> Option<u64> {
    Some(u64::from(id))
}

/// A value that cannot be copied.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Report {
    rows: u32,
}

#[redis_cached(key = "report:<id>", ttl = "60s", cache = cache)]
async fn report(cache: &Cache, id: u32) -> Result<Report, String> {
    Ok(Report { rows: id })
}

#[redis_cached(key = "names:<id>", ttl = "60s", cache = cache, batch)]
async fn names(cache: &Cache, ids: &[u32]) -> HashMap<u32, String> {
    ids.iter().map(|id| (*id, format!("name {id}"))).collect()
}

/// A cache whose functions keep their values near for 30 s, once its tracking is live.
async fn by_default(server: &RedisServer, namespace: &str) -> Cache {
    near_by_default_cache(&server.url(), namespace, Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_does_not_say_keeps_its_values_near() {
    let server = RedisServer::start();
    let cache = by_default(&server, "nd-plain").await;
    let loads = AtomicU32::new(0);
    until_near_hit(&cache, || async {
        assert_eq!(plain(&cache, &loads, 1).await, Ok(10));
    })
    .await;
    let mut conn = server.conn().await;
    let gets = command_calls(&mut conn, "get").await;
    for _ in 0..100 {
        assert_eq!(plain(&cache, &loads, 1).await, Ok(10));
    }
    assert_eq!(
        command_calls(&mut conn, "get").await,
        gets,
        "near hits ask Redis nothing"
    );
    assert!(cache.stats().near_hits >= 100);
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_and_values_that_cannot_be_copied_read_redis() {
    let server = RedisServer::start();
    let cache = by_default(&server, "nd-off").await;
    for _ in 0..20 {
        assert_eq!(off(&cache, 3).await, Ok(3));
        assert_eq!(report(&cache, 4).await, Ok(Report { rows: 4 }));
    }
    let stats = cache.stats();
    assert_eq!(stats.near_hits, 0, "nothing served from memory");
    assert_eq!(stats.near_entries, 0, "nothing kept");
    assert_eq!(
        stats.hits, 38,
        "every call after the first of each read Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_s_own_near_keeps_its_own_time() {
    let server = RedisServer::start();
    let cache = by_default(&server, "nd-short").await;
    assert_eq!(short(&cache, 5).await, Some(5));
    // Its copies live a millisecond, not the cache's 30 s: after that, calls read Redis.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(short(&cache, 5).await, Some(5));
    }
    assert_eq!(cache.stats().near_hits, 0);
    assert_eq!(cache.stats().hits, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_function_keeps_its_values_near_too() {
    let server = RedisServer::start();
    let cache = by_default(&server, "nd-batch").await;
    until_near_hit(&cache, || async {
        let found = names(&cache, &[1, 2]).await;
        assert_eq!(found[&2], "name 2");
    })
    .await;
    let mut conn = server.conn().await;
    let mgets = command_calls(&mut conn, "mget").await;
    assert_eq!(names(&cache, &[1, 2]).await.len(), 2);
    assert_eq!(
        command_calls(&mut conn, "mget").await,
        mgets,
        "both ids from memory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_drops_a_copy_kept_by_default() {
    let server = RedisServer::start();
    let cache = by_default(&server, "nd-inval").await;
    let loads = AtomicU32::new(0);
    until_near_hit(&cache, || async {
        plain(&cache, &loads, 7).await.unwrap();
    })
    .await;
    assert!(invalidate_plain(&cache, 7).await.unwrap());
    let near_hits = cache.stats().near_hits;
    assert_eq!(plain(&cache, &loads, 7).await, Ok(70));
    assert_eq!(
        cache.stats().near_hits,
        near_hits,
        "the copy went with the entry"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_option_is_checked_when_the_cache_is_built() {
    let url = "redis://127.0.0.1:1";
    let cases = [
        (
            Cache::builder(url).near_by_default(Duration::from_secs(5)),
            "near_cache needs room for at least one entry (call near_cache(entries) with near_by_default)",
        ),
        (
            Cache::builder(url)
                .near_cache(10)
                .near_by_default(Duration::ZERO),
            "near_by_default must be between 1ms and a day, got 0ns",
        ),
        (
            Cache::builder(url)
                .near_cache(10)
                .near_by_default(Duration::from_secs(2 * 24 * 60 * 60)),
            "near_by_default must be between 1ms and a day, got 172800s",
        ),
    ];
    for (builder, expected) in cases {
        match builder.build().await {
            Err(Error::InvalidConfig(message)) => assert_eq!(message, expected),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
}
