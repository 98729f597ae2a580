//! What real cluster deployments do to a cache (the cluster issue): a primary SIGKILLed during a
//! stampede, a graceful failover while a waiter waits, a service invalidating through a
//! failover, and a hung node among the seeds. Each test starts its own three-primary,
//! three-replica cluster (`cluster-node-timeout` 1000 ms) and waits on `CLUSTER INFO`
//! conditions, never on fixed sleeps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, Policy};
use cached_redis_tests::{
    HeldLoad, RedisCluster, SlotMove, eventually, stampede_in_processes, timed_read,
};

fn cluster_cache(urls: &[String], namespace: &str) -> cached_redis::CacheBuilder {
    Cache::cluster_builder(&urls.iter().map(String::as_str).collect::<Vec<_>>())
        .namespace(namespace)
        .op_timeout(Duration::from_millis(500))
        .breaker_threshold(3)
        .breaker_cooldown(Duration::from_millis(300))
}

fn policy() -> Policy {
    Policy::new("row", Duration::from_secs(60)).unwrap()
}

async fn read(cache: &Cache, key: &Key, value: &str) -> Result<String, String> {
    let value = value.to_owned();
    cache.fetch(key, &policy(), async move { Ok(value) }).await
}

/// Item 2: 30 callers of one cold key in 3 processes, the key's primary SIGKILLed while the
/// 400 ms load runs. Every caller answered within 3 s of the kill, and one load per process,
/// plus at most one for the callers that joined a process's load after it took the lease: its
/// write-back never reached Redis, so the value cannot be proven fresh for them (an
/// invalidation may have come in between), and they share a load of their own. On a loaded
/// machine a caller scheduled a few milliseconds late is such a joiner (seen: `[2, 1, 1]`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_survives_its_primary_dying() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let mut cluster = RedisCluster::start();
    let urls = cluster.urls().join(",");
    let child = env!("CARGO_BIN_EXE_cached-redis-child");
    let stampede = tokio::spawn(async move {
        stampede_in_processes(child, &urls, "cl-kill", 21, (3, 10, 400)).await
    });
    let lease = "cl-kill:{shared:21}:lease";
    let mut holder = None;
    let found = eventually(Duration::from_secs(10), || {
        holder = cluster.primary_holding(lease);
        std::future::ready(holder.is_some())
    })
    .await;
    assert!(found, "a child took the lease");
    let killed_at = Instant::now();
    cluster.kill(holder.unwrap());
    let stampede = stampede.await.unwrap();
    let answered = killed_at.elapsed();
    println!(
        "cluster stampede, primary killed mid-load: loads per process {:?}, all answered {answered:?} after the kill",
        stampede.loads_per_process
    );
    assert!(
        stampede.loads_per_process.iter().all(|&n| n <= 2),
        "at most one load per process, and one for its late joiners: {:?}",
        stampede.loads_per_process
    );
    assert!(
        stampede.loads < 6,
        "not every process loaded twice (before the fix each did): {:?}",
        stampede.loads_per_process
    );
    assert!(answered < Duration::from_secs(3), "{answered:?}");
}

/// Item 1: a caller waiting on another process's load is woken within 1 s of the store when the
/// entry's primary failed over in between: gracefully (`CLUSTER FAILOVER` on its replica), or
/// SIGKILLed and replaced by its replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_woken_after_its_slot_failed_over() {
    waiter_across_a_failover(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_woken_after_its_primary_was_killed() {
    waiter_across_a_failover(true).await;
}

async fn waiter_across_a_failover(kill: bool) {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let mut cluster = RedisCluster::start();
    let urls = cluster.urls();
    let holder = cluster_cache(&urls, "cl-wake").build().await.unwrap();
    let waiter = cluster_cache(&urls, "cl-wake").build().await.unwrap();
    let key = Key::raw("wake:1");
    let load = HeldLoad::start(&holder, &key, "stored");
    let lease = format!("{}:lease", holder.redis_key(&key));
    let mut primary = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            primary = cluster.primary_holding(&lease);
            std::future::ready(primary.is_some())
        })
        .await
    );
    let waiting = timed_read(&waiter, &key, "loaded by the waiter");
    assert!(
        eventually(Duration::from_secs(10), || async {
            waiter.stats().lock_waits == 1
        })
        .await
    );
    let primary = primary.unwrap();
    let replica = cluster
        .replica_of(primary)
        .expect("the primary has a replica");
    // The lease reached the replica before the primary goes.
    let replicated = eventually(Duration::from_secs(10), || {
        std::future::ready(cluster.dbsize(replica) == cluster.dbsize(primary))
    })
    .await;
    assert!(replicated, "the lease was replicated");
    if kill {
        cluster.kill(primary);
    } else {
        assert!(
            cluster
                .cli(replica, &["CLUSTER", "FAILOVER"])
                .contains("OK")
        );
    }
    let promoted = eventually(Duration::from_secs(20), || {
        std::future::ready(cluster.cli(replica, &["ROLE"]).starts_with("master"))
    })
    .await;
    assert!(promoted, "the replica took over");
    tokio::task::block_in_place(|| cluster.wait_healthy(Duration::from_secs(20)));
    let (stored, stored_at) = load.finish().await;
    let (woken, woken_at) = waiting.await.unwrap();
    let delay = woken_at.saturating_duration_since(stored_at);
    println!(
        "cluster failover (primary killed: {kill}): the waiter answered {delay:?} after the store ({stored:?} / {woken:?})"
    );
    assert_eq!(stored.as_deref(), Ok("stored"));
    if kill {
        // With its slot's primary dead, the waiter's re-check cannot reach Redis: it may
        // answer from its own load (fail-open) before the store, never later than a second.
        assert!(matches!(
            woken.as_deref(),
            Ok("stored" | "loaded by the waiter")
        ));
    } else {
        assert_eq!(woken.as_deref(), Ok("stored"), "woken by the store");
    }
    assert!(
        delay < Duration::from_secs(1),
        "woken {delay:?} after the store"
    );
}

/// Item 4: a service that keeps invalidating a prefix through a failover (answering `Err`
/// while the primary is down) has hits again within `breaker_cooldown` plus a call after the
/// promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_recovers_from_a_failover() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let mut cluster = RedisCluster::start();
    let urls = cluster.urls();
    let cache = cluster_cache(&urls, "cl-breaker").build().await.unwrap();
    let keys: Vec<Key> = (0..20).map(|i| Key::raw(format!("row:{i}"))).collect();
    for key in &keys {
        assert!(read(&cache, key, "v").await.is_ok());
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let invalidating = {
        let (cache, stop) = (cache.clone(), stop.clone());
        tokio::spawn(async move {
            let mut errors = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                errors += u32::from(cache.invalidate_prefix("nothing:").await.is_err());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            errors
        })
    };
    let victim = cluster.primaries()[0];
    cluster.kill(victim);
    tokio::task::block_in_place(|| cluster.wait_healthy(Duration::from_secs(20)));
    let promoted = Instant::now();
    let hits = eventually(Duration::from_secs(10), || async {
        let before = cache.stats().hits;
        for key in &keys {
            let _ = read(&cache, key, "v").await;
        }
        cache.stats().hits - before == keys.len() as u64
    })
    .await;
    let resumed = promoted.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let errors = invalidating.await.unwrap();
    println!(
        "cluster failover while invalidating: {errors} invalidations failed; every read hits {resumed:?} after the promotion"
    );
    assert!(hits, "hits resume after the promotion: {:?}", cache.stats());
    assert!(resumed < Duration::from_secs(3), "{resumed:?}");
    assert!(cache.ping().await.is_ok());
}

/// Item 5: one replica hung (SIGSTOP: its port accepts connections that never answer) and
/// named among the seed URLs must not keep a new cache from serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_among_the_seeds_does_not_keep_the_cache_from_starting() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let cluster = RedisCluster::start();
    let primary = cluster.primaries()[0];
    let hung = cluster.replica_of(primary).expect("a replica");
    cluster.node(hung).pause();
    // The hung node first among the seeds.
    let mut urls = vec![format!("redis://127.0.0.1:{hung}")];
    urls.extend(
        cluster
            .urls()
            .into_iter()
            .filter(|u| !u.ends_with(&format!(":{hung}"))),
    );
    let op_timeout = Duration::from_millis(500);
    let cache = cluster_cache(&urls, "cl-hung")
        .op_timeout(op_timeout)
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    let key = Key::raw("hung:1");
    let serving = eventually(Duration::from_secs(10), || async {
        let _ = read(&cache, &key, "v").await;
        cache.stats().hits > 0
    })
    .await;
    let took = started.elapsed();
    cluster.node(hung).resume();
    println!("cluster with a hung seed: first hit after {took:?} (op_timeout {op_timeout:?})");
    assert!(serving, "the cache never served: {:?}", cache.stats());
    assert!(took < 6 * op_timeout, "{took:?}");
}

/// Item 3: with a primary SIGKILLed and its replica not yet promoted, `invalidate_prefix`
/// answers `Err` (it cannot reach every slot), never an `Ok` that skipped the dead primary's
/// entries; once the replica is promoted it succeeds and leaves nothing from before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_prefix_never_reports_a_removal_it_did_not_do() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let mut cluster = RedisCluster::start();
    let urls = cluster.urls();
    // Each call scans and unlinks on every primary; on a loaded machine one step can take
    // longer than the other tests' 500 ms while the cluster settles.
    let cache = cluster_cache(&urls, "cl-prefix")
        .op_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let keys: Vec<Key> = (0..300).map(|i| Key::raw(format!("row:{i}"))).collect();
    for key in &keys {
        assert_eq!(read(&cache, key, "before").await.as_deref(), Ok("before"));
    }
    let victim = cluster.primaries()[0];
    // Its replica has the entries before the kill.
    let replica = cluster.replica_of(victim).expect("a replica");
    let synced = eventually(Duration::from_secs(10), || {
        std::future::ready(cluster.dbsize(replica) == cluster.dbsize(victim))
    })
    .await;
    assert!(synced, "the replica caught up");
    cluster.kill(victim);
    let killed = Instant::now();
    // The promotion takes about two `cluster-node-timeout`s; the first scan after it succeeds.
    let (mut errors, deadline) = (0, killed + Duration::from_secs(15));
    let removed = loop {
        let error = match cache.invalidate_prefix("row:").await {
            Ok(removed) => break removed,
            Err(error) => error,
        };
        errors += 1;
        assert!(
            Instant::now() < deadline,
            "invalidate_prefix never succeeded: {error} ({:?})",
            cluster.cli(cluster.primaries()[0], &["CLUSTER", "NODES"])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let succeeded = killed.elapsed();
    tokio::task::block_in_place(|| cluster.wait_healthy(Duration::from_secs(20)));
    let reader = cluster_cache(&cluster.urls(), "cl-prefix")
        .build()
        .await
        .unwrap();
    let mut stale = 0;
    for key in &keys {
        stale += usize::from(read(&reader, key, "after").await.as_deref() == Ok("before"));
    }
    println!(
        "cluster prefix invalidation through a failover: {errors} Err, then Ok({removed}) {succeeded:?} after the kill; {stale} of 300 stale after"
    );
    assert!(errors > 0, "the dead primary's slots made it fail first");
    assert_eq!(
        stale, 0,
        "an Ok removed every entry, the dead primary's included"
    );
}

/// Item 3, a reshard onto a new node: while an entry's slot is moving to a primary that serves
/// no slot yet, with the entry already there, `invalidate_prefix` answers `Err`, never an `Ok`
/// that skipped that node; once the move ends it succeeds and leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_prefix_is_refused_while_a_slot_moves_to_a_new_node() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let mut cluster = RedisCluster::start_with_replicas(0);
    let cache = cluster_cache(&cluster.urls(), "cl-reshard")
        .op_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let key = Key::raw("row:moving");
    assert_eq!(read(&cache, &key, "before").await.as_deref(), Ok("before"));
    let entry = cache.redis_key(&key);
    let from = cluster.primary_holding(&entry).expect("stored");
    let to = tokio::task::block_in_place(|| cluster.add_empty_primary());
    let moving = SlotMove::of(&cluster, &entry, from, to);
    moving.begin();
    moving.move_keys();
    assert_eq!((moving.keys_at(from), moving.keys_at(to)), (0, 1));
    let during = cache.invalidate_prefix("row:").await;
    println!("invalidate_prefix while the slot moves to a new node: {during:?}");
    assert!(
        during.is_err(),
        "an Ok would have skipped the new node, which holds the entry: {during:?}"
    );
    moving.finish();
    // The cluster connection learns the move from the next MOVED; the removal then succeeds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let removed = loop {
        match cache.invalidate_prefix("row:").await {
            Ok(removed) => break removed,
            Err(error) => assert!(Instant::now() < deadline, "never succeeded: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // An attempt that answered `Err` (a node it scanned still had the old slot map) may have
    // removed the entry already, on the new node: the `Ok` then counts nothing. Failed once
    // in a full run on a loaded machine at 14905d7 (`removed` was 0), asserting exactly 1.
    assert!(removed <= 1, "at most the entry: {removed}");
    assert_eq!(
        moving.keys_at(to),
        0,
        "and removed the entry on the new node"
    );
}

/// Item 7: a failover's write pause (`CLIENT PAUSE ... WRITE`) on one primary is not an outage
/// for reads: reads of cached keys on every primary keep hitting, and a cold key's call is
/// bounded by `op_timeout` plus its loader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_pause_on_a_primary_keeps_hits_going() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let cluster = RedisCluster::start();
    let op_timeout = Duration::from_millis(500);
    let cache = cluster_cache(&cluster.urls(), "cl-pause")
        .build()
        .await
        .unwrap();
    let hot: Vec<Key> = (0..50).map(|i| Key::raw(format!("hot:{i}"))).collect();
    for key in &hot {
        assert!(read(&cache, key, "v").await.is_ok());
    }
    cache.settle().await; // stored before writes pause
    for primary in cluster.primaries() {
        assert!(
            cluster
                .cli(primary, &["CLIENT", "PAUSE", "1500", "WRITE"])
                .contains("OK")
        );
    }
    let paused_at = Instant::now();
    let readers: Vec<_> = (0..4u64)
        .map(|r| {
            let (cache, hot) = (cache.clone(), hot.clone());
            tokio::spawn(async move {
                let (mut hot_reads, mut slowest, mut n) = (0u64, Duration::ZERO, r);
                while paused_at.elapsed() < Duration::from_millis(1100) {
                    let cold = n % 4 == 0;
                    let key = if cold {
                        Key::raw(format!("cold:{n}"))
                    } else {
                        hot[(n % 50) as usize].clone()
                    };
                    hot_reads += u64::from(!cold);
                    let started = Instant::now();
                    assert!(read(&cache, &key, "v").await.is_ok());
                    slowest = slowest.max(started.elapsed());
                    n += 4;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                (hot_reads, slowest)
            })
        })
        .collect();
    let (mut hot_reads, mut slowest) = (0, Duration::ZERO);
    for reader in readers {
        let (reads, slow) = reader.await.unwrap();
        hot_reads += reads;
        slowest = slowest.max(slow);
    }
    let hits = cache.stats().hits;
    println!(
        "cluster write pause: {hits} hits of {hot_reads} reads of cached keys; slowest call {slowest:?}"
    );
    assert_eq!(
        hits,
        hot_reads,
        "every read of a cached key hit: {:?}",
        cache.stats()
    );
    assert!(
        slowest < op_timeout + Duration::from_millis(500),
        "{slowest:?}"
    );
}

/// When a holder's store lands, relative to its slot's move.
#[derive(Clone, Copy, Debug, PartialEq)]
enum StoreLands {
    /// Both sides in migration, the keys not moved yet: a script over the lease (present)
    /// and the value (absent) is answered `TRYAGAIN` until the move ends.
    BeforeTheKeys,
    /// The keys moved, the slot not yet reassigned: the store is answered `ASK`, and the
    /// new owner answers `TRYAGAIN` until the move ends.
    AfterTheKeys,
    /// The move finished: the store is answered `MOVED`.
    AfterTheMove,
}

/// Item 1, a slot move: the entry's slot (its value, lease and channel) moves to another
/// primary while another process waits on the lease; the holder's store lands at each step of
/// the move, and the waiter is woken within 1 s of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_woken_after_its_slot_moved() {
    waiter_across_a_slot_move(StoreLands::AfterTheMove).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_woken_by_a_store_answered_ask() {
    waiter_across_a_slot_move(StoreLands::AfterTheKeys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_woken_by_a_store_while_its_keys_wait_to_move() {
    waiter_across_a_slot_move(StoreLands::BeforeTheKeys).await;
}

async fn waiter_across_a_slot_move(lands: StoreLands) {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let holder = cluster_cache(&urls, "cl-move").build().await.unwrap();
    let waiter = cluster_cache(&urls, "cl-move").build().await.unwrap();
    let key = Key::raw("move:1");
    let load = HeldLoad::start(&holder, &key, "stored");
    let lease = format!("{}:lease", holder.redis_key(&key));
    let mut from = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            from = cluster.primary_holding(&lease);
            std::future::ready(from.is_some())
        })
        .await
    );
    let from = from.unwrap();
    let waiting = timed_read(&waiter, &key, "loaded by the waiter");
    assert!(
        eventually(Duration::from_secs(10), || async {
            waiter.stats().lock_waits == 1
        })
        .await
    );
    let to = cluster
        .primaries()
        .into_iter()
        .find(|p| *p != from)
        .unwrap();
    let moving = SlotMove::of(&cluster, &lease, from, to);
    moving.begin();
    if lands != StoreLands::BeforeTheKeys {
        moving.move_keys();
        assert_eq!(
            (moving.keys_at(from), moving.keys_at(to)),
            (0, 1),
            "the lease moved with its slot"
        );
    }
    if lands == StoreLands::AfterTheMove {
        moving.finish();
    }
    let refused_before = moving.refusals();
    let storing = tokio::spawn(load.finish());
    if lands != StoreLands::AfterTheMove {
        // The store reaches Redis mid-move and is answered TRYAGAIN; the move then ends.
        let refused = eventually(Duration::from_secs(10), || {
            std::future::ready(moving.refusals() > refused_before)
        })
        .await;
        assert!(refused, "the store reached the migrating slot");
        if lands == StoreLands::BeforeTheKeys {
            moving.move_keys();
        }
        moving.finish();
    }
    let (stored, stored_at) = storing.await.unwrap();
    let (woken, woken_at) = waiting.await.unwrap();
    let delay = woken_at.saturating_duration_since(stored_at);
    println!(
        "cluster slot move, store {lands:?}: the waiter answered {delay:?} after the store ({stored:?} / {woken:?}); {:?}",
        holder.stats()
    );
    assert_eq!(stored.as_deref(), Ok("stored"));
    assert_eq!(
        woken.as_deref(),
        Ok("stored"),
        "the waiter got the holder's value"
    );
    assert!(
        delay < Duration::from_secs(1),
        "woken {delay:?} after the store"
    );
    let reader = cluster_cache(&urls, "cl-move").build().await.unwrap();
    assert_eq!(
        read(&reader, &key, "reloaded").await.as_deref(),
        Ok("stored"),
        "the stored value is on the slot's new owner"
    );
}

/// Item 6: replica-acknowledged invalidation on a cluster waits on the entry's own primary.
/// An invalidation confirmed by the replica survives that replica's promotion; one made while
/// the replica was stopped answers `Err(NotReplicated)`, and promoting that replica (the
/// primary SIGKILLed before it could catch up) brings the entry back, as the error warned:
/// the test shows that its setup loses the delete, so the confirmed case means something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_wait_for_the_entrys_own_replica() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let mut cluster = RedisCluster::start();
    let cache = cluster_cache(&cluster.urls(), "cl-wait")
        .invalidate_replicas(1, Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let lost = Key::raw("wait:lost");
    assert!(read(&cache, &lost, "before").await.is_ok());
    let primary = cluster
        .primary_holding(&cache.redis_key(&lost))
        .expect("stored");
    let kept = cached_on(&cluster, &cache, primary, "before").await;
    assert!(
        cache.invalidate(&kept).await.unwrap(),
        "confirmed by the replica"
    );
    let replica = cluster.replica_of(primary).expect("a replica");
    // Stopped, and with its replication link cut so that the delete is not left waiting in
    // the replica's socket buffer for it to read when it resumes.
    cluster.node(replica).pause();
    cluster.cli(primary, &["CLIENT", "KILL", "TYPE", "replica"]);
    let said = cache.invalidate(&lost).await;
    cluster.kill(primary);
    cluster.node(replica).resume();
    assert!(
        matches!(
            said,
            Err(cached_redis::Error::NotReplicated {
                acknowledged: 0,
                wanted: 1
            })
        ),
        "the writer is told its invalidation may not survive a failover: {said:?}"
    );
    tokio::task::block_in_place(|| cluster.wait_healthy(Duration::from_secs(30)));
    let on_promoted = |key: &Key| cluster.cli(replica, &["EXISTS", &cache.redis_key(key)]);
    assert_eq!(
        on_promoted(&kept).trim(),
        "0",
        "a confirmed invalidation survived the promotion"
    );
    assert_eq!(
        on_promoted(&lost).trim(),
        "1",
        "the replica that missed the delete was promoted with the entry, as the Err said"
    );
}

/// A key of this cache, cached with `value`, whose entry lives on `primary`.
async fn cached_on(cluster: &RedisCluster, cache: &Cache, primary: u16, value: &str) -> Key {
    for i in 0.. {
        let key = Key::raw(format!("wait:{i}"));
        assert_eq!(read(cache, &key, value).await.as_deref(), Ok(value));
        if cluster.primary_holding(&cache.redis_key(&key)) == Some(primary) {
            cache.settle().await; // stored, not only leased
            return key;
        }
    }
    unreachable!("some key hashes to every primary")
}
