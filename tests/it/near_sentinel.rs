//! The near cache behind Sentinel: tracked on the primary the sentinels name; when it dies
//! every copy is flushed, and tracking starts over on the promoted replica, whose writes then
//! drop the copies again.

use std::time::Duration;

use cached_redis::{Cache, Key, Policy};
use cached_redis_tests::{MASTER, RedisSentinel, RedisServer, eventually, until_near_hit};

fn builder(sentinel: &RedisSentinel) -> cached_redis::CacheBuilder {
    Cache::sentinel_builder(&[sentinel.url().as_str()], MASTER)
        .namespace("near-sent")
        .op_timeout(Duration::from_millis(500))
        .breaker_threshold(3)
        .breaker_cooldown(Duration::from_millis(200))
}

async fn read(cache: &Cache, key: &Key, value: &str) -> String {
    let policy = Policy::new("row", Duration::from_secs(60))
        .unwrap()
        .with_near(Duration::from_secs(30))
        .unwrap();
    let value = value.to_owned();
    let read: Result<String, String> = cache.fetch_near(key, &policy, async { Ok(value) }).await;
    read.unwrap()
}

/// Reads `key` until a call is a near hit.
async fn warm(cache: &Cache, key: &Key, value: &str) {
    until_near_hit(cache, || async {
        assert_eq!(read(cache, key, value).await, value)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_flushes_and_tracking_follows_the_promoted_replica() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::start();
    replica.replicate(primary.port()).await;
    let sentinel = RedisSentinel::start(primary.port()).await;
    let reader = builder(&sentinel)
        .near_cache(100)
        .near_max_lag(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let writer = builder(&sentinel).build().await.unwrap();
    assert!(eventually(Duration::from_secs(10), || async { reader.near_is_live() }).await);
    let key = Key::raw("row:1");
    warm(&reader, &key, "before").await;
    let flushes = reader.stats().near_flushes;

    primary.kill();
    assert!(
        eventually(Duration::from_secs(5), || async {
            reader.stats().near_flushes > flushes
        })
        .await,
        "the primary's death flushed the copies"
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            sentinel.primary_port().await == Some(replica.port())
        })
        .await,
        "the sentinel promoted the replica"
    );
    assert!(
        eventually(Duration::from_secs(20), || async { reader.near_is_live() }).await,
        "tracking on the promoted replica"
    );
    warm(&reader, &key, "before").await;
    assert!(writer.invalidate(&key).await.unwrap());
    assert!(
        eventually(Duration::from_secs(5), || async {
            read(&reader, &key, "after").await == "after"
        })
        .await,
        "the new primary's write reached the copy"
    );
}
