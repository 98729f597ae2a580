//! Primary/replica deployments managed by Redis Sentinel (`Cache::sentinel_builder`): real
//! `redis-server --sentinel` processes next to a primary and a replica on loopback. The cache
//! caches and invalidates through the primary the sentinels name; when the primary is
//! SIGKILLed, every call is still answered, and after the promotion the same cache serves hits
//! again, invalidates on the new primary, and wakes its waiters, without a restart.

use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, Policy};
use cached_redis_tests::{
    HeldLoad, MASTER, RedisSentinel, RedisServer, eventually, get_raw, timed_read,
};

async fn sentinel_cache(sentinel: &RedisSentinel) -> cached_redis::CacheBuilder {
    Cache::sentinel_builder(&[sentinel.url().as_str()], MASTER)
        .namespace("sent")
        .op_timeout(Duration::from_millis(500))
        .breaker_threshold(3)
        .breaker_cooldown(Duration::from_millis(200))
}

async fn read(cache: &Cache, key: &Key, value: &str) -> Result<String, String> {
    let policy = Policy::new("row", Duration::from_secs(60)).unwrap();
    let value = value.to_owned();
    cache.fetch(key, &policy, async move { Ok(value) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_behind_sentinel_caches_and_invalidates() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    replica.replicate(primary.port()).await;
    let sentinel = RedisSentinel::start(primary.port()).await;
    let cache = sentinel_cache(&sentinel)
        .await
        .invalidate_replicas(1, Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let key = Key::raw("row:1");
    assert_eq!(read(&cache, &key, "v1").await.as_deref(), Ok("v1"));
    assert_eq!(read(&cache, &key, "other").await.as_deref(), Ok("v1"));
    assert_eq!(cache.stats().hits, 1);
    let mut on_primary = primary.conn().await;
    assert!(
        get_raw(&mut on_primary, &cache.redis_key(&key))
            .await
            .is_some()
    );
    assert!(
        cache.invalidate(&key).await.unwrap(),
        "removed, and confirmed by the replica"
    );
    assert!(
        get_raw(&mut on_primary, &cache.redis_key(&key))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_is_followed_without_a_restart() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::start();
    replica.replicate(primary.port()).await;
    let sentinel = RedisSentinel::start(primary.port()).await;
    let here = sentinel_cache(&sentinel).await.build().await.unwrap();
    let there = sentinel_cache(&sentinel).await.build().await.unwrap();
    let cached = Key::raw("row:cached");
    assert!(read(&here, &cached, "before").await.is_ok());

    primary.kill();
    let killed_at = Instant::now();
    // Every call is answered while the sentinels fail over.
    let (mut calls, deadline) = (0, killed_at + Duration::from_secs(30));
    while sentinel.primary_port().await != Some(replica.port()) {
        let key = Key::raw(format!("row:during:{calls}"));
        assert_eq!(read(&here, &key, "loaded").await.as_deref(), Ok("loaded"));
        calls += 1;
        assert!(
            Instant::now() < deadline,
            "the sentinel never promoted the replica"
        );
    }
    let promoted_at = Instant::now();
    let probe = Key::raw("row:probe");
    let hits_again = eventually(Duration::from_secs(5), || async {
        let hits = here.stats().hits;
        let _ = read(&here, &probe, "after").await;
        let _ = read(&here, &probe, "after").await;
        here.stats().hits > hits
    })
    .await;
    let resumed = promoted_at.elapsed();
    println!(
        "sentinel failover: promoted {:?} after the kill ({calls} calls answered meanwhile); hits again {resumed:?} after the promotion",
        promoted_at - killed_at
    );
    assert!(
        hits_again,
        "the same cache serves hits again: {:?}",
        here.stats()
    );

    // Invalidation reaches the new primary, and a read after it sees the write.
    let mut on_new_primary = replica.conn().await;
    assert!(
        get_raw(&mut on_new_primary, &here.redis_key(&probe))
            .await
            .is_some()
    );
    assert!(there.invalidate(&probe).await.unwrap());
    assert!(
        get_raw(&mut on_new_primary, &here.redis_key(&probe))
            .await
            .is_none()
    );
    assert_eq!(
        read(&here, &probe, "written").await.as_deref(),
        Ok("written")
    );

    // A waiter here is woken by a store there, on the new primary, within a second.
    let waited = Key::raw("row:waited");
    let holder = HeldLoad::start(&there, &waited, "stored there");
    assert!(eventually(Duration::from_secs(5), || async { there.stats().loads > 0 }).await);
    let waiter = timed_read(&here, &waited, "loaded here");
    assert!(
        eventually(Duration::from_secs(5), || async {
            here.stats().lock_waits > 0
        })
        .await
    );
    let (stored, stored_at) = holder.finish().await;
    let (woken, woken_at) = waiter.await.unwrap();
    let delay = woken_at.saturating_duration_since(stored_at);
    println!("sentinel failover: a waiter answered {delay:?} after the store on the new primary");
    assert_eq!(stored.as_deref(), Ok("stored there"));
    assert_eq!(woken.as_deref(), Ok("stored there"));
    assert!(delay < Duration::from_secs(1), "{delay:?}");
    assert!(resumed < Duration::from_secs(5), "{resumed:?}");
}

/// The data nodes' credentials are the cache's own (`node_auth`), not the sentinels': with them
/// the cache caches on a primary that requires a password; without them every call is
/// answered by its loader and `ping` says why. A cache not behind Sentinel refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_behind_sentinel_logs_in_to_its_data_nodes() {
    let primary = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let sentinel = RedisSentinel::start_with_auth(primary.port(), Some("s3cret")).await;
    let cache = sentinel_cache(&sentinel)
        .await
        .node_auth(None, "s3cret")
        .build()
        .await
        .unwrap();
    let key = Key::raw("auth:1");
    assert_eq!(read(&cache, &key, "stored").await.as_deref(), Ok("stored"));
    assert_eq!(
        read(&cache, &key, "loaded again").await.as_deref(),
        Ok("stored"),
        "a hit: {:?}",
        cache.stats()
    );
    let without = sentinel_cache(&sentinel).await.build().await.unwrap();
    assert_eq!(
        read(&without, &key, "loaded").await.as_deref(),
        Ok("loaded"),
        "answered by the loader"
    );
    let refused = without.ping().await.expect_err("not logged in");
    assert!(
        refused.to_string().contains("NOAUTH"),
        "ping says why: {refused}"
    );
    let misplaced = Cache::builder(&primary.url())
        .node_auth(None, "s3cret")
        .build()
        .await
        .expect_err("not behind Sentinel");
    assert!(
        misplaced.to_string().contains("credentials in the URL"),
        "{misplaced}"
    );
}
