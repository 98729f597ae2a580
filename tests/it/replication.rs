//! Invalidations that survive a failover: with `invalidate_replicas`, an invalidation waits for
//! replicas to confirm it (`WAIT`) and returns `Err` when they do not in time, so the writer
//! learns that a failover could bring the entry back. Without it, a primary that acknowledged
//! the delete and died before replicating it leaves the promoted replica serving the old value.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, Error, Key, Policy, redis_cached};
use cached_redis_tests::{Proxy, RedisServer, get_raw};

/// A cached row; `row` is what the database holds now.
#[redis_cached(key = "item:<id>", ttl = "60s", cache = cache)]
async fn item(cache: &Cache, row: &AtomicU32, id: u32) -> Result<u32, String> {
    Ok(row.load(Ordering::SeqCst))
}

async fn cache_on(primary: &RedisServer, replicas: Option<u32>) -> Cache {
    let builder = Cache::builder(&primary.url())
        .namespace("repl")
        .op_timeout(Duration::from_secs(2));
    let builder = match replicas {
        Some(n) => builder.invalidate_replicas(n, Duration::from_millis(300)),
        None => builder,
    };
    builder.build().await.unwrap()
}

/// `said` is the error that tells the writer the one replica asked for did not confirm.
fn assert_unconfirmed<T: std::fmt::Debug>(said: &Result<T, Error>) {
    let unconfirmed = Error::NotReplicated {
        acknowledged: 0,
        wanted: 1,
    };
    assert!(
        matches!(said, Err(e) if e.to_string() == unconfirmed.to_string()),
        "the writer is told the write may not survive a failover: {said:?}"
    );
}

async fn store(cache: &Cache, key: &Key, value: &str) {
    let policy = Policy::new("row", Duration::from_secs(60)).unwrap();
    let value = value.to_owned();
    let stored: Result<String, String> = cache.fetch(key, &policy, async move { Ok(value) }).await;
    assert!(stored.is_ok());
    cache.settle().await;
}

/// Holds the replication stream, runs `invalidate` on the primary, kills the primary (its
/// unsent stream dies with the proxy) and promotes the replica: returns what `invalidate` said
/// and whether the promoted replica still has the entry.
async fn invalidate_then_fail_over(with_wait: bool) -> (Result<bool, Error>, bool) {
    let mut primary = RedisServer::start();
    let replica = RedisServer::start();
    let link = Proxy::start(primary.port()).await;
    replica.replicate(link.port()).await;
    let cache = cache_on(&primary, with_wait.then_some(1)).await;
    let key = Key::raw("row:1");
    store(&cache, &key, "before the write").await;
    if with_wait {
        assert!(
            cache.invalidate(&key).await.unwrap(),
            "confirmed by the replica"
        );
        store(&cache, &key, "before the write").await;
    }
    // Let the stored entry reach the replica, then cut it off and invalidate.
    let mut on_replica = replica.conn().await;
    let entry = cache.redis_key(&key);
    assert!(
        cached_redis_tests::eventually(Duration::from_secs(5), || async {
            get_raw(&mut on_replica.clone(), &entry).await.is_some()
        })
        .await
    );
    link.hold_replies(0);
    let said = cache.invalidate(&key).await;
    primary.kill();
    drop(link);
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut on_replica)
        .await
        .unwrap();
    let survived = get_raw(&mut on_replica, &entry).await.is_some();
    (said, survived)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_waiting_a_lost_invalidation_looks_like_success() {
    let (said, survived) = invalidate_then_fail_over(false).await;
    assert!(matches!(said, Ok(true)), "{said:?}");
    assert!(
        survived,
        "the promoted replica serves the entry the writer thinks is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_replicas_tells_the_writer_of_the_window() {
    let (said, survived) = invalidate_then_fail_over(true).await;
    assert_unconfirmed(&said);
    assert!(survived, "as it was told, the entry may come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_does_not_hold_up_hits() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    replica.replicate(primary.port()).await;
    let cache = cache_on(&primary, Some(1)).await;
    let (hot, cold) = (Key::raw("row:hot"), Key::raw("row:cold"));
    store(&cache, &hot, "hot").await;
    store(&cache, &cold, "cold").await;
    replica.pause();
    let invalidation = {
        let (cache, cold) = (cache.clone(), cold.clone());
        tokio::spawn(async move { cache.invalidate(&cold).await })
    };
    // While the invalidation waits for the stopped replica, hits are answered.
    let started = std::time::Instant::now();
    store(&cache, &hot, "hot").await;
    let hit_took = started.elapsed();
    assert_eq!(cache.stats().hits, 1);
    assert!(
        matches!(
            invalidation.await.unwrap(),
            Err(Error::NotReplicated { .. })
        ),
        "the replica never confirmed"
    );
    assert!(
        hit_took < Duration::from_millis(300),
        "the hit did not queue behind WAIT: {hit_took:?}"
    );
    replica.resume();
}

/// Concurrent invalidations while a replica lags: each waits on a connection of its own (WAIT
/// holds the connection on the server), none is cut short by `op_timeout`, and the breaker
/// stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_waiting_invalidations_do_not_open_the_breaker() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    replica.replicate(primary.port()).await;
    let cache = Cache::builder(&primary.url())
        .namespace("repl")
        .op_timeout(Duration::from_millis(250))
        .breaker_threshold(2)
        .invalidate_replicas(1, Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    replica.pause();
    let invalidations: Vec<_> = (0..5)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.invalidate(&Key::raw(format!("row:{i}"))).await })
        })
        .collect();
    for invalidation in invalidations {
        let said = invalidation.await.unwrap();
        assert!(
            matches!(said, Err(Error::NotReplicated { .. })),
            "told the replica did not confirm, not a timeout: {said:?}"
        );
    }
    replica.resume();
    assert!(cache.ping().await.is_ok());
    let key = Key::raw("row:after");
    store(&cache, &key, "v").await;
    assert!(
        cache.invalidate(&key).await.unwrap(),
        "the write breaker is closed"
    );
}

/// Bulk removals wait for the replicas too: `invalidate_prefix` is confirmed while the replica
/// follows, and `Err(NotReplicated)` while it is stopped, the entries then still on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_invalidation_waits_for_the_replicas() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    replica.replicate(primary.port()).await;
    let cache = cache_on(&primary, Some(1)).await;
    let keys: Vec<Key> = (0..3).map(|i| Key::raw(format!("bulk:{i}"))).collect();
    for key in &keys {
        store(&cache, key, "v").await;
    }
    assert_eq!(cache.invalidate_prefix("bulk:").await.unwrap(), 3);
    for key in &keys {
        store(&cache, key, "v").await;
    }
    let on_replica = replica.conn().await;
    let last = cache.redis_key(&keys[2]);
    let copied = cached_redis_tests::eventually(Duration::from_secs(5), || async {
        get_raw(&mut on_replica.clone(), &last).await.is_some()
    });
    assert!(copied.await, "the entries reached the replica");
    replica.pause();
    let started = std::time::Instant::now();
    let said = cache.invalidate_prefix("bulk:").await;
    println!(
        "bulk removal with the replica stopped: {said:?} after {:?}",
        started.elapsed()
    );
    replica.resume();
    assert_unconfirmed(&said);
}

/// An update waits for the replicas as an invalidation does: confirmed while the replica
/// follows (the replica has the changed value), `Err(NotReplicated)` while it is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_waits_for_the_replicas() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    replica.replicate(primary.port()).await;
    let cache = cache_on(&primary, Some(1)).await;
    let key = Key::raw("stock:1");
    store(&cache, &key, "10").await;
    let append = |s: &mut String| s.push('!');
    assert!(cache.update(&key, append).await.unwrap());
    let on_replica = replica.conn().await;
    let redis_key = cache.redis_key(&key);
    let stored = get_raw(&mut on_replica.clone(), &redis_key).await.unwrap();
    assert!(
        String::from_utf8_lossy(&stored).contains(r#""v":"10!""#),
        "the replica had the update when it was confirmed"
    );
    replica.pause();
    let said = cache.update(&key, append).await;
    replica.resume();
    assert_unconfirmed(&said);
}

/// Waits (bounded) until the replica has every one of `entries`.
async fn until_replicated(replica: &RedisServer, entries: &[String]) {
    let on_replica = replica.conn().await;
    let copied = cached_redis_tests::eventually(Duration::from_secs(5), || async {
        for entry in entries {
            if get_raw(&mut on_replica.clone(), entry).await.is_none() {
                return false;
            }
        }
        true
    });
    assert!(copied.await, "the entries reached the replica");
}

/// `Ok` from a bulk removal means the replicas have it, on a retry too. The first
/// `invalidate_prefix` / `invalidate_all_<fn>` with the replica stopped unlinks the entries on
/// the primary and answers `NotReplicated`; the retry finds nothing left to unlink, and must
/// still wait for the replica (before: `Ok(0)` at once, the replica still holding the entries,
/// since a scan that found nothing sent no `WAIT`), and so must a `clear()` after it. Once the
/// replica follows again, the retry is confirmed and the entries are gone from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_bulk_removal_is_not_ok_until_the_replicas_confirm() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    replica.replicate(primary.port()).await;
    let cache = cache_on(&primary, Some(1)).await;
    let row = AtomicU32::new(1);
    for id in 1..=3 {
        item(&cache, &row, id).await.unwrap();
    }
    let entries: Vec<String> = (1..=3).map(|id| cache.redis_key(&item_key(id))).collect();
    until_replicated(&replica, &entries).await;
    replica.pause();
    let first = cache.invalidate_prefix("item:3").await;
    let retried = cache.invalidate_prefix("item:3").await;
    let first_all = invalidate_all_item(&cache).await;
    let retried_all = invalidate_all_item(&cache).await;
    let cleared = cache.clear().await;
    let retried_one = cache.invalidate(&item_key(1)).await;
    replica.resume();
    for said in [&first, &retried, &first_all, &retried_all, &cleared] {
        assert_unconfirmed(said);
    }
    assert_unconfirmed(&retried_one);
    assert_eq!(cache.invalidate_prefix("item:3").await.unwrap(), 0);
    assert_eq!(
        cache.clear().await.unwrap(),
        0,
        "confirmed once the replica follows"
    );
    let mut on_replica = replica.conn().await;
    for entry in &entries {
        assert!(
            get_raw(&mut on_replica, entry).await.is_none(),
            "confirmed: the replica no longer has {entry}"
        );
    }
}

/// A `refresh_<fn>` whose removal the replicas did not confirm says so (`Err(NotReplicated)`)
/// instead of answering the new value while a replica still holds the old one (before: the
/// revocation's `NotReplicated` was swallowed and the refresh answered `Ok(new value)`).
/// Nothing is loaded then; once the replica follows, the retry loads and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_the_replicas_did_not_confirm_is_an_err() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    let link = Proxy::start(primary.port()).await;
    replica.replicate(link.port()).await;
    let cache = cache_on(&primary, Some(1)).await;
    let row = AtomicU32::new(1);
    assert_eq!(item(&cache, &row, 7).await, Ok(1));
    let entry = cache.redis_key(&item_key(7));
    until_replicated(&replica, std::slice::from_ref(&entry)).await;
    let mut on_replica = replica.conn().await;
    let old = get_raw(&mut on_replica, &entry).await;
    row.store(2, Ordering::SeqCst);
    link.hold_replies(0);
    let refreshed = refresh_item(&cache, &row, 7).await;
    assert_unconfirmed(&refreshed);
    assert_eq!(
        get_raw(&mut on_replica, &entry).await,
        old,
        "the replica still holds the old value, as the Err says"
    );
    link.release_replies(0);
    let retried = refresh_item(&cache, &row, 7).await;
    assert!(matches!(retried, Ok(Ok(2))), "{retried:?}");
}

/// Each confirmation is bounded by its own `within` plus `op_timeout`, whatever else waits:
/// 12 concurrent invalidations with no replica attached (each `WAIT` runs out its 300 ms)
/// all answer `NotReplicated` within that bound (before: they queued behind one another's
/// `WAIT`, the last after about 12 × 300 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_confirmations_each_take_at_most_their_own_bound() {
    let primary = RedisServer::start();
    let (within, op_timeout) = (Duration::from_millis(300), Duration::from_secs(1));
    let cache = Cache::builder(&primary.url())
        .namespace("repl")
        .op_timeout(op_timeout)
        .invalidate_replicas(1, within)
        .build()
        .await
        .unwrap();
    assert!(cache.ping().await.is_ok());
    let invalidations: Vec<_> = (0..12)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let said = cache.invalidate(&Key::raw(format!("row:{i}"))).await;
                (said, started.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for invalidation in invalidations {
        let (said, took) = invalidation.await.unwrap();
        assert_unconfirmed(&said);
        slowest = slowest.max(took);
    }
    println!("slowest of 12 concurrent confirmations: {slowest:?}");
    assert!(
        slowest < within + op_timeout,
        "no confirmation queued behind another's WAIT: {slowest:?}"
    );
}

/// A confirmation connection that black-holes fails confirmations only: its timeouts count on
/// a breaker of their own, so the write breaker that leases share stays closed and cold keys
/// are still stored (before: one timed-out `WAIT` opened the write breaker, and for the
/// cooldown no cold key was stored, 0 of 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_confirmation_leaves_the_write_breaker_closed() {
    let primary = RedisServer::start();
    let proxy = Proxy::start(primary.port()).await;
    let cache = Cache::builder(&proxy.url())
        .namespace("repl")
        .op_timeout(Duration::from_millis(300))
        .breaker_threshold(1)
        .breaker_cooldown(Duration::from_secs(60))
        .invalidate_replicas(1, Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let warm = Key::raw("row:warm");
    store(&cache, &warm, "v").await;
    // The first confirmation opens its connection: no replica, so the replicas do not confirm.
    let before = proxy.connections();
    assert_unconfirmed(&cache.invalidate(&warm).await);
    let after = proxy.connections();
    assert!(
        after > before,
        "the confirmation went over a connection of its own"
    );
    for index in before..after {
        proxy.hold_replies(index);
    }
    let said = cache.invalidate(&warm).await;
    assert!(matches!(said, Err(Error::Timeout(_))), "{said:?}");
    let mut on_primary = primary.conn().await;
    let mut stored = 0;
    for i in 0..10 {
        let key = Key::raw(format!("row:cold:{i}"));
        store(&cache, &key, "v").await;
        stored += usize::from(
            get_raw(&mut on_primary, &cache.redis_key(&key))
                .await
                .is_some(),
        );
    }
    assert_eq!(
        stored, 10,
        "cold keys are stored: the write breaker is closed"
    );
}

/// At `maxmemory` under `noeviction`, Redis refuses writes but allows removals: an invalidation
/// that removed the entry on the primary and the replica answers `Ok`, not the `OOM` its
/// confirmation's mark met (adversarial review: `Err(OOM)` before the mark was allowed to run
/// out of memory, so a writer retrying until `Ok` would retry forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_an_invalidation_is_confirmed() {
    let primary =
        RedisServer::start_with(&["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]);
    let replica = RedisServer::start();
    replica.replicate(primary.port()).await;
    let cache = cache_on(&primary, Some(1)).await;
    let row = AtomicU32::new(1);
    item(&cache, &row, 1).await.unwrap();
    let mut conn = primary.conn().await;
    for i in 0.. {
        let filled: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("junk:{i}"))
            .arg(vec![b'x'; 4096])
            .query_async(&mut conn)
            .await;
        if filled.is_err() {
            break;
        }
    }
    let invalidated = invalidate_item(&cache, 1).await;
    assert!(matches!(invalidated, Ok(true)), "{invalidated:?}");
    let redis_key = cache.redis_key(&item_key(1));
    assert_eq!(get_raw(&mut conn, &redis_key).await, None);
    let mut on_replica = replica.conn().await;
    assert_eq!(get_raw(&mut on_replica, &redis_key).await, None);
}
