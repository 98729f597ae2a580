//! The core behaviour suite against a real local Redis Cluster (3 primaries + 3 replicas):
//! hits, errors not cached, a stampede across processes, invalidation racing a load, TTL and
//! jitter, keys spread over every primary, whole-prefix invalidation on every primary, and a
//! primary killed mid-run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, redis_cached};
use cached_redis_tests::{HeldDb, RedisCluster, eventually, in_the_near_pass};

async fn cluster_cache(cluster: &RedisCluster, namespace: &str) -> Cache {
    let urls = cluster.urls();
    let builder = Cache::cluster_builder(&urls.iter().map(String::as_str).collect::<Vec<_>>())
        .namespace(namespace)
        .op_timeout(Duration::from_secs(2))
        .breaker_threshold(3)
        .breaker_cooldown(Duration::from_millis(200));
    in_the_near_pass(builder).build().await.unwrap()
}

#[redis_cached(key = "row:<id>", ttl = "60s", jitter = "10%", cache = cache)]
async fn row(cache: &Cache, id: u64, db: &HeldDb) -> Result<u64, String> {
    Ok(db.read().await? * 1_000_000 + id)
}

/// A fresh cluster, alone in this binary, a cache on it and a database.
async fn on_a_cluster(
    namespace: &str,
) -> (
    tokio::sync::MutexGuard<'static, ()>,
    RedisCluster,
    Cache,
    Arc<HeldDb>,
) {
    let alone = cached_redis_tests::one_cluster_at_a_time().await;
    let cluster = RedisCluster::start();
    let cache = cluster_cache(&cluster, namespace).await;
    (alone, cluster, cache, Arc::new(HeldDb::new(0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_and_errors_never_cached_on_a_cluster() {
    let (_alone, _cluster, cache, db) = on_a_cluster("cl").await;
    assert_eq!(row(&cache, 1, &db).await, Ok(1));
    cache.settle().await;
    assert_eq!(row(&cache, 1, &db).await, Ok(1));
    assert_eq!(cache.stats().hits, 1);
    db.fail(true);
    assert!(row(&cache, 2, &db).await.is_err());
    db.fail(false);
    assert_eq!(row(&cache, 2, &db).await, Ok(2), "the error was not cached");
    assert_eq!(cache.stats().redis_errors, 0, "{:?}", cache.stats());
}

/// TTL and jitter, read back from the node that owns each key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_and_jitter_hold_on_a_cluster() {
    let (_alone, cluster, cache, db) = on_a_cluster("cl").await;
    let mut conn = redis::cluster::ClusterClient::new(cluster.urls())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    for id in 100..140 {
        row(&cache, id, &db).await.unwrap();
        cache.settle().await;
        let key = cache.redis_key(&Key::builder().text("row:").part(&id).build());
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((54_000 - 50..=60_000).contains(&pttl), "{key}: {pttl}");
    }
}

/// An invalidation racing a load: the stale write-back is refused, on the key's own shard,
/// and another process reads the fresh value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_racing_a_load_wins_on_a_cluster() {
    let (_alone, cluster, cache, db) = on_a_cluster("cl").await;
    db.set_version(1);
    let started = db.hold_next_read();
    let stale = {
        let (cache, db) = (cache.clone(), db.clone());
        tokio::spawn(async move { row(&cache, 7, &db).await })
    };
    started.await;
    db.set_version(2);
    invalidate_row(&cache, 7).await.unwrap();
    let other = cluster_cache(&cluster, "cl").await; // another process
    assert_eq!(
        row(&other, 7, &db).await,
        Ok(2_000_007),
        "no stale value after the invalidation"
    );
    db.release();
    assert_eq!(stale.await.unwrap(), Ok(1_000_007));
    cache.settle().await;
    assert_eq!(cache.stats().stale_refused, 1);
    assert_eq!(row(&cache, 7, &db).await, Ok(2_000_007));
}

/// A stampede across OS processes: one load, waiters woken by sharded pub/sub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_load_for_a_stampede_across_processes_on_a_cluster() {
    let (_alone, cluster, _cache, _db) = on_a_cluster("cl").await;
    let (processes, tasks, loader_ms) = (3, 20, 200);
    let child = env!("CARGO_BIN_EXE_cached-redis-child");
    let urls = cluster.urls().join(",");
    let stampede = cached_redis_tests::stampede_in_processes(
        child,
        &urls,
        "cl-procs",
        11,
        (processes, tasks, loader_ms),
    )
    .await;
    assert_eq!(
        stampede.loads, 1,
        "one load across {processes} processes on a cluster"
    );
    let slowest = stampede.latencies_ms.last().copied().unwrap();
    // Woken by the store, not by the 5 s lease's expiry.
    assert!(
        slowest < loader_ms as f64 + 2_000.0,
        "waiters woken promptly: {slowest:.1} ms"
    );
}

/// 10,000 keys spread over all three primaries (the hash tag is per entry), and a prefix
/// invalidation scans every primary in bounded batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_every_primary_and_a_prefix_reaches_them_all() {
    let (_alone, cluster, spread, spread_db) = on_a_cluster("spread").await;
    let workers: Vec<_> = (0..32u64)
        .map(|w| {
            let (cache, db) = (spread.clone(), spread_db.clone());
            tokio::spawn(async move {
                for id in (w..10_000).step_by(32) {
                    row(&cache, id, &db).await.unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    let sizes: Vec<u64> = primaries.iter().map(|p| cluster.dbsize(*p)).collect();
    println!("cluster: keys per primary {sizes:?}");
    assert!(
        sizes.iter().all(|s| *s > 2_500),
        "keys spread over every primary: {sizes:?}"
    );
    assert_eq!(spread.invalidate_prefix("row:").await.unwrap(), 10_000);
    let after: Vec<u64> = primaries.iter().map(|p| cluster.dbsize(*p)).collect();
    assert!(
        after.iter().sum::<u64>() < sizes.iter().sum::<u64>() - 9_999,
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_costs_no_call_and_hits_resume_without_a_restart() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let mut cluster = RedisCluster::start();
    let cache = cluster_cache(&cluster, "failover").await;
    let db = Arc::new(HeldDb::new(0));
    for id in 0..60 {
        row(&cache, id, &db).await.unwrap();
    }
    // Readers keep calling through the failover; every call must return the right value.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4u64)
        .map(|r| {
            let (cache, db, stop, calls) = (cache.clone(), db.clone(), stop.clone(), calls.clone());
            tokio::spawn(async move {
                let mut id = r;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(
                        row(&cache, id % 60, &db).await,
                        Ok(id % 60),
                        "a call failed"
                    );
                    calls.fetch_add(1, Ordering::Relaxed);
                    id += 4;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    let running = eventually(Duration::from_secs(10), || async {
        calls.load(Ordering::Relaxed) >= 20
    });
    assert!(running.await, "the readers call before the kill");
    let checker = cluster_cache(&cluster, "failover").await;
    let victim = cluster.primaries()[0];
    let killed_at = Instant::now();
    cluster.kill(victim);
    // Wait for the replica's promotion, then for hits on every key again.
    tokio::task::block_in_place(|| cluster.wait_healthy(Duration::from_secs(20)));
    let promoted = killed_at.elapsed();
    // A cache of its own (the readers' calls would blur the counts), built before the kill.
    let resumed = eventually(Duration::from_secs(10), || async {
        let before = checker.stats();
        for id in 0..60 {
            assert_eq!(row(&checker, id, &db).await, Ok(id));
        }
        checker.stats().hits - before.hits == 60
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    println!(
        "cluster failover: replica promoted {promoted:?} after the kill; hits on all keys again after {:?}; {} calls during it, none failed",
        killed_at.elapsed(),
        calls.load(Ordering::Relaxed)
    );
    assert!(
        resumed,
        "hits resume after the failover: {:?}",
        cache.stats()
    );
}
