//! The near cache on a Redis Cluster: tracked on every master, so a write on any of them drops
//! the copy; a failover, or a master added, flushes every copy and tracking starts over on the
//! masters as they are now. Each test starts its own cluster and waits on conditions, never on
//! fixed sleeps.

use std::time::Duration;

use cached_redis::{Cache, Key, Policy};
use cached_redis_tests::{RedisCluster, SlotMove, eventually, until_near_hit};

async fn near_cache(cluster: &RedisCluster, namespace: &str) -> Cache {
    let urls = cluster.urls();
    let cache = Cache::cluster_builder(&urls.iter().map(String::as_str).collect::<Vec<_>>())
        .namespace(namespace)
        .op_timeout(Duration::from_secs(2))
        .near_cache(1_000)
        .near_max_lag(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async { cache.near_is_live() }).await,
        "tracking on every master comes up"
    );
    cache
}

async fn plain_cache(cluster: &RedisCluster, namespace: &str) -> Cache {
    let urls = cluster.urls();
    Cache::cluster_builder(&urls.iter().map(String::as_str).collect::<Vec<_>>())
        .namespace(namespace)
        .op_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap()
}

fn policy() -> Policy {
    Policy::new("row", Duration::from_secs(60))
        .unwrap()
        .with_near(Duration::from_secs(30))
        .unwrap()
}

async fn read(cache: &Cache, key: &Key, value: &str) -> String {
    let value = value.to_owned();
    let read: Result<String, String> = cache.fetch_near(key, &policy(), async { Ok(value) }).await;
    read.unwrap()
}

/// Reads `key` until a call is a near hit.
async fn warm(cache: &Cache, key: &Key, value: &str) {
    until_near_hit(cache, || async {
        assert_eq!(read(cache, key, value).await, value)
    })
    .await;
}

/// Invalidates `key` through `writer` and waits until `reader` no longer answers from its
/// copy.
async fn dropped_after_write(reader: &Cache, writer: &Cache, key: &Key) {
    assert!(writer.invalidate(key).await.unwrap(), "{key} was stored");
    assert!(
        eventually(Duration::from_secs(5), || async {
            read(reader, key, "after the write").await == "after the write"
        })
        .await,
        "the write of {key} reached the near copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_any_master_drops_the_copy() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let cluster = RedisCluster::start_with_replicas(0);
    let reader = near_cache(&cluster, "near-cl").await;
    let writer = plain_cache(&cluster, "near-cl").await;
    let keys: Vec<Key> = (0..12).map(|i| Key::raw(format!("row:{i}"))).collect();
    let mut masters = std::collections::HashSet::new();
    for key in &keys {
        warm(&reader, key, "before").await;
        masters.insert(cluster.primary_holding(&reader.redis_key(key)).unwrap());
    }
    assert_eq!(masters.len(), 3, "the keys are spread over every master");
    for key in &keys {
        dropped_after_write(&reader, &writer, key).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_flushes_and_tracking_follows_the_new_primary() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let cluster = RedisCluster::start();
    let reader = near_cache(&cluster, "near-fo").await;
    let writer = plain_cache(&cluster, "near-fo").await;
    let key = Key::raw("row:failover");
    warm(&reader, &key, "before").await;
    let primary = cluster.primary_holding(&reader.redis_key(&key)).unwrap();
    let replica = cluster.replica_of(primary).expect("a replica");
    let flushes = reader.stats().near_flushes;
    assert!(
        cluster
            .cli(replica, &["CLUSTER", "FAILOVER"])
            .contains("OK")
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            reader.stats().near_flushes > flushes
        })
        .await,
        "the failover flushed the copies"
    );
    tokio::task::block_in_place(|| cluster.wait_healthy(Duration::from_secs(20)));
    assert!(eventually(Duration::from_secs(20), || async { reader.near_is_live() }).await);
    warm(&reader, &key, "before").await;
    dropped_after_write(&reader, &writer, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_to_a_new_master_is_tracked_there() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let mut cluster = RedisCluster::start_with_replicas(0);
    let reader = near_cache(&cluster, "near-mv").await;
    let writer = plain_cache(&cluster, "near-mv").await;
    let key = Key::raw("row:moving");
    warm(&reader, &key, "before").await;
    let entry = reader.redis_key(&key);
    let from = cluster.primary_holding(&entry).unwrap();
    let flushes = reader.stats().near_flushes;
    let to = tokio::task::block_in_place(|| cluster.add_empty_primary());
    assert!(
        eventually(Duration::from_secs(20), || async {
            reader.stats().near_flushes > flushes
        })
        .await,
        "a new master flushed the copies"
    );
    let moving = SlotMove::of(&cluster, &entry, from, to);
    moving.begin();
    moving.move_keys();
    moving.finish();
    assert_eq!(moving.keys_at(to), 1);
    assert!(eventually(Duration::from_secs(20), || async { reader.near_is_live() }).await);
    warm(&reader, &key, "before").await;
    dropped_after_write(&reader, &writer, &key).await;
    assert_eq!(
        cluster.primary_holding(&entry),
        Some(to),
        "the new value is on the new master"
    );
}
