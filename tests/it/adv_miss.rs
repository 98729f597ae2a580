//! Adversarial tests of the background write-back (`read/lead.rs` `store_in_background`,
//! `read/write_backs.rs`): each fails if a guarantee of the README breaks through it. The
//! write-back's reply is held at a proxy (requests still reach Redis), loaders carry hooks, and
//! nothing waits on a sleep to order events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, Policy};
use cached_redis_tests::{Proxy, RedisServer, assert_no_state_left, eventually, get_raw};
use tokio::sync::Notify;

fn policy() -> Policy {
    Policy::new("adv", Duration::from_secs(60)).unwrap()
}

fn near_policy() -> Policy {
    policy().with_near(Duration::from_secs(5)).unwrap()
}

/// Waits (bounded) until Redis holds `value` (decoded as the cache's `u64`) at `key`'s entry,
/// i.e. until a write-back whose reply is held has run on the server.
async fn until_stored(admin: &redis::aio::MultiplexedConnection, cache: &Cache, key: &Key) {
    let redis_key = cache.redis_key(key);
    let stored = eventually(Duration::from_secs(5), || {
        let (mut admin, redis_key) = (admin.clone(), redis_key.clone());
        async move { get_raw(&mut admin, &redis_key).await.is_some() }
    })
    .await;
    assert!(stored, "the write-back reached Redis");
}

async fn read(cache: &Cache, key: &Key, db: &AtomicU64) -> Result<u64, String> {
    cache
        .fetch(key, &policy(), async { Ok(db.load(Ordering::SeqCst)) })
        .await
}

async fn read_near(cache: &Cache, key: &Key, db: &AtomicU64) -> Result<u64, String> {
    cache
        .fetch_near(key, &near_policy(), async { Ok(db.load(Ordering::SeqCst)) })
        .await
}

// ---------------------------------------------------------------------------------------------
// 4. Hangs: a write-back no runtime drives.
// ---------------------------------------------------------------------------------------------

/// A `Cache` built on a multi-thread runtime is used first from another thread's
/// current-thread runtime (`block_on` per request, the runtime kept for the next request).
/// Found by the adversary: the miss's write-back was spawned on that runtime, never polled
/// while it sat idle, and every later call of the key and `settle()` waited for it forever.
/// Write-backs now run on the runtime the cache was built on, and a later call waits for one
/// at most `op_timeout`. (The connections themselves are driven by the runtime that first used
/// them, redis-rs's driver tasks: an idle one stalls them, each command bounded by
/// `op_timeout`, which the setup guide states.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_back_spawned_on_an_idle_current_thread_runtime_does_not_hang_later_calls() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder("adv-strand")
        .op_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let key = Key::raw("row:stranded");
    let (answered_tx, answered_rx) = std::sync::mpsc::channel();
    let (drop_tx, drop_rx) = std::sync::mpsc::channel::<()>();
    let worker = {
        let (cache, key) = (cache.clone(), key.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let value: Result<u64, String> =
                runtime.block_on(cache.fetch(&key, &policy(), async { Ok(1) }));
            answered_tx.send(value).unwrap();
            // The runtime stays, idle, until the next request of this worker thread.
            let _ = drop_rx.recv();
            drop(runtime);
        })
    };
    let answered = tokio::task::spawn_blocking(move || answered_rx.recv().unwrap())
        .await
        .unwrap();
    assert_eq!(answered, Ok(1));

    let later: Result<Result<u64, String>, _> = tokio::time::timeout(
        Duration::from_secs(3),
        cache.fetch(&key, &policy(), async { Ok(2) }),
    )
    .await;
    let settled = tokio::time::timeout(Duration::from_secs(2), cache.settle()).await;
    let in_flight = cached_redis::__private::in_flight(&cache);
    // Let the worker go (dropping its runtime drops the stranded task) before asserting.
    drop_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || worker.join().unwrap())
        .await
        .unwrap();
    assert!(
        later.is_ok(),
        "a later call of the key from another runtime hung (> 3 s) on a write-back that its idle \
         runtime never polls; in_flight was {in_flight:?}"
    );
    assert!(settled.is_ok(), "settle() hung on the stranded write-back");
}

// ---------------------------------------------------------------------------------------------
// Redis trouble: a later call's latency.
// ---------------------------------------------------------------------------------------------

/// A write pause (`CLIENT PAUSE ... WRITE`, as a failover makes) starts right after a miss's
/// lease was granted. The miss's caller is answered; a call of the same key right after it
/// first waits in `done_with` for the paused write-back (up to `op_timeout`), then finds no
/// value and sends its own lease script, which is paused too: about two `op_timeout`s.
/// README: "every call returns the loader's result within `op_timeout`" (plus the loader;
/// `refused.rs` asserts op_timeout + 500 ms for a write pause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_a_miss_during_a_write_pause_is_bounded_by_one_op_timeout() {
    let server = RedisServer::start();
    let admin = server.conn().await;
    let op_timeout = Duration::from_millis(600);
    let cache = Cache::builder(&server.url())
        .namespace("adv-bound")
        .op_timeout(op_timeout)
        .build()
        .await
        .unwrap();
    let key = Key::raw("row:bound");
    let first: Result<u64, String> = cache
        .fetch(&key, &policy(), async {
            // The lease was granted; now writes pause for 3 s.
            let _: () = redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(3000)
                .arg("WRITE")
                .query_async(&mut admin.clone())
                .await
                .unwrap();
            Ok(1)
        })
        .await;
    assert_eq!(first, Ok(1));
    let started = Instant::now();
    let second: Result<u64, String> = cache.fetch(&key, &policy(), async { Ok(2) }).await;
    let took = started.elapsed();
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut admin.clone())
        .await
        .unwrap();
    assert!(second.is_ok());
    println!(
        "the call after the miss took {took:?} (op_timeout {op_timeout:?}), answered {second:?}"
    );
    assert!(
        took < op_timeout + Duration::from_millis(400),
        "a call during a write pause took {took:?}: the write-back's op_timeout (done_with) plus \
         its own lease's op_timeout; the documented bound is op_timeout plus the loader"
    );
}

/// A write-back whose reply never comes: `settle()` and a later call return within
/// `op_timeout` (plus their own), and nothing is left in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_write_back_does_not_hang_settle_or_later_calls() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut admin = server.conn().await;
    let op_timeout = Duration::from_millis(300);
    let builder = Cache::builder(&proxy.url())
        .namespace("adv-hole")
        .op_timeout(op_timeout);
    let (cache, writes) = proxy.cache_and_writes(&mut admin, builder).await;
    let key = Key::raw("row:hole");
    let first = proxy.miss_holding_write_back(&cache, writes, &key, 1).await;
    assert_eq!(first, Ok(1));
    let settled = tokio::time::timeout(op_timeout * 3, cache.settle()).await;
    assert!(
        settled.is_ok(),
        "settle bounded by the write-back's op_timeout"
    );
    let later = tokio::time::timeout(
        op_timeout * 4,
        cache.fetch(&key, &policy(), async { Ok::<u64, String>(2) }),
    )
    .await;
    assert!(later.is_ok(), "a later call is bounded");
    proxy.release_replies(writes);
    cache.settle().await;
    assert_no_state_left(&cache).await;
}

// ---------------------------------------------------------------------------------------------
// 1. No stale value after a completed invalidation.
// ---------------------------------------------------------------------------------------------

/// P1 (near cache, behind the proxy) misses and returns while its write-back's reply is held
/// (the value is on the server). P2 (near) reads it, then the row changes and P2 invalidates.
/// Reads that start after that from P1 (near and not), P2 (near) and P3 (plain) get the new
/// version. Then the same with P1 invalidating itself while its write-back is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_read_anywhere_after_an_invalidation_while_the_write_back_is_held() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut admin = server.conn().await;
    let ns = "adv-stale";
    let builder = Cache::builder(&proxy.url())
        .namespace(ns)
        .op_timeout(Duration::from_secs(5))
        .near_cache(100);
    let (p1, writes) = proxy.cache_and_writes(&mut admin, builder).await;
    assert!(eventually(Duration::from_secs(10), || async { p1.near_is_live() }).await);
    let p2 = cached_redis_tests::near_cache(&server.url(), ns, Duration::from_millis(500)).await;
    let p3 = server.cache(ns).await;
    let db = Arc::new(AtomicU64::new(1));

    // Invalidation from another process.
    let key = Key::raw("row:a");
    let first = p1
        .fetch_near(&key, &near_policy(), async {
            proxy.hold_replies(writes);
            Ok::<u64, String>(db.load(Ordering::SeqCst))
        })
        .await;
    assert_eq!(first, Ok(1));
    until_stored(&admin, &p1, &key).await;
    // P2 keeps a near copy of version 1.
    cached_redis_tests::until_near_hit(&p2, || async {
        assert_eq!(read_near(&p2, &key, &db).await, Ok(1));
    })
    .await;
    db.store(2, Ordering::SeqCst);
    assert!(p2.invalidate(&key).await.unwrap());
    // Reads that start now.
    let p1_near = tokio::spawn({
        let (p1, key, db) = (p1.clone(), key.clone(), db.clone());
        async move { read_near(&p1, &key, &db).await }
    });
    let p1_plain = tokio::spawn({
        let (p1, key, db) = (p1.clone(), key.clone(), db.clone());
        async move { read(&p1, &key, &db).await }
    });
    assert_eq!(
        read_near(&p2, &key, &db).await,
        Ok(2),
        "P2 (near) after its invalidation"
    );
    assert_eq!(
        read(&p3, &key, &db).await,
        Ok(2),
        "P3 after P2's invalidation"
    );
    proxy.release_replies(writes);
    assert_eq!(
        p1_near.await.unwrap(),
        Ok(2),
        "P1 (near) after P2's invalidation"
    );
    assert_eq!(p1_plain.await.unwrap(), Ok(2), "P1 after P2's invalidation");
    p1.settle().await;
    for _ in 0..20 {
        assert_eq!(read_near(&p1, &key, &db).await, Ok(2));
        assert_eq!(read_near(&p2, &key, &db).await, Ok(2));
    }

    // Invalidation from P1 itself while its own write-back's reply is held.
    let key = Key::raw("row:b");
    db.store(10, Ordering::SeqCst);
    let first = p1
        .fetch_near(&key, &near_policy(), async {
            proxy.hold_replies(writes);
            Ok::<u64, String>(db.load(Ordering::SeqCst))
        })
        .await;
    assert_eq!(first, Ok(10));
    until_stored(&admin, &p1, &key).await;
    db.store(11, Ordering::SeqCst);
    let invalidating = tokio::spawn({
        let (p1, key) = (p1.clone(), key.clone());
        async move { p1.invalidate(&key).await }
    });
    // The invalidation runs on the server (its reply is held behind the write-back's).
    let redis_key = p1.redis_key(&key);
    assert!(
        eventually(Duration::from_secs(5), || {
            let (mut admin, redis_key) = (admin.clone(), redis_key.clone());
            async move { get_raw(&mut admin, &redis_key).await.is_none() }
        })
        .await
    );
    proxy.release_replies(writes);
    assert!(invalidating.await.unwrap().unwrap());
    assert_eq!(
        read_near(&p1, &key, &db).await,
        Ok(11),
        "P1 (near) after its own invalidation"
    );
    assert_eq!(read(&p1, &key, &db).await, Ok(11));
    assert_eq!(read(&p3, &key, &db).await, Ok(11));
    p1.settle().await;
    assert_no_state_left(&p1).await;
}

/// The load reads the row, the row changes and another process invalidates during the load
/// (the lease is revoked before the write-back is sent), a local joiner waits for the verdict.
/// The write-back is refused, counted once as `stale_refused`, the joiner reads again and gets
/// the new version, and nothing of the old version is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_write_back_is_refused_counted_once_and_its_joiner_reads_again() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut admin = server.conn().await;
    let ns = "adv-revoked";
    let builder = Cache::builder(&proxy.url())
        .namespace(ns)
        .op_timeout(Duration::from_secs(5));
    let (p1, writes) = proxy.cache_and_writes(&mut admin, builder).await;
    let p2 = server.cache(ns).await;
    p1.reset_stats();
    let db = Arc::new(AtomicU64::new(1));
    let key = Key::raw("row:revoked");
    let (loading, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let leader = tokio::spawn({
        let (p1, key, db, loading, go) = (
            p1.clone(),
            key.clone(),
            db.clone(),
            loading.clone(),
            go.clone(),
        );
        async move {
            p1.fetch(&key, &policy(), async {
                let v = db.load(Ordering::SeqCst);
                loading.notify_one();
                go.notified().await;
                Ok::<u64, String>(v)
            })
            .await
        }
    });
    loading.notified().await;
    // A local caller joins the load after it read the row.
    let joiner = tokio::spawn({
        let (p1, key, db) = (p1.clone(), key.clone(), db.clone());
        async move { read(&p1, &key, &db).await }
    });
    assert!(
        eventually(Duration::from_secs(5), || async {
            p1.stats().coalesced == 1
        })
        .await
    );
    db.store(2, Ordering::SeqCst);
    assert!(!p2.invalidate(&key).await.unwrap());
    proxy.hold_replies(writes);
    go.notify_one();
    assert_eq!(
        leader.await.unwrap(),
        Ok(1),
        "its own load, which overlapped the write"
    );
    proxy.release_replies(writes);
    assert_eq!(joiner.await.unwrap(), Ok(2), "the joiner reads again");
    p1.settle().await;
    let stats = p1.stats();
    assert_eq!(stats.stale_refused, 1, "{stats:?}");
    assert_eq!(read(&p2, &key, &db).await, Ok(2));
    assert_eq!(read(&p1, &key, &db).await, Ok(2));
    assert_eq!(p1.stats().stale_refused, 1);
    assert_no_state_left(&p1).await;
}

// ---------------------------------------------------------------------------------------------
// 2. update_* while the write-back is held.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_here_and_there_while_the_write_back_is_held_are_not_lost() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut admin = server.conn().await;
    let ns = "adv-update";
    let builder = Cache::builder(&proxy.url())
        .namespace(ns)
        .op_timeout(Duration::from_secs(5));
    let (p1, writes) = proxy.cache_and_writes(&mut admin, builder).await;
    let p2 = server.cache(ns).await;
    let db = Arc::new(AtomicU64::new(1));
    let newer = |to: u64| {
        move |v: &mut u64| {
            if *v < to {
                *v = to
            }
        }
    };

    // Another process updates while P1's write-back reply is held.
    let key = Key::raw("row:u1");
    let first = p1
        .fetch(&key, &policy(), async {
            proxy.hold_replies(writes);
            Ok::<u64, String>(db.load(Ordering::SeqCst))
        })
        .await;
    assert_eq!(first, Ok(1));
    until_stored(&admin, &p1, &key).await;
    db.store(2, Ordering::SeqCst);
    assert!(
        p2.update(&key, newer(2)).await.unwrap(),
        "the stored entry is updated"
    );
    let p1_read = tokio::spawn({
        let (p1, key, db) = (p1.clone(), key.clone(), db.clone());
        async move { read(&p1, &key, &db).await }
    });
    proxy.release_replies(writes);
    assert_eq!(p1_read.await.unwrap(), Ok(2), "P1 after P2's update");
    p1.settle().await;
    assert_eq!(read(&p2, &key, &db).await, Ok(2));

    // This process updates while its own write-back's reply is held.
    let key = Key::raw("row:u2");
    db.store(5, Ordering::SeqCst);
    let first = p1
        .fetch(&key, &policy(), async {
            proxy.hold_replies(writes);
            Ok::<u64, String>(db.load(Ordering::SeqCst))
        })
        .await;
    assert_eq!(first, Ok(5));
    db.store(6, Ordering::SeqCst);
    let updating = tokio::spawn({
        let (p1, key) = (p1.clone(), key.clone());
        async move { p1.update(&key, newer(6)).await }
    });
    proxy.release_replies(writes);
    let updated = updating.await.unwrap().unwrap();
    let (here, there) = (read(&p1, &key, &db).await, read(&p2, &key, &db).await);
    assert_eq!(
        (here, there),
        (Ok(6), Ok(6)),
        "update applied ({updated}) or entry removed"
    );
    assert!(
        updated,
        "the update waited for the write-back and applied to it"
    );

    // Two updates racing the held write-back, one from each process: neither is lost.
    let key = Key::raw("row:u3");
    db.store(7, Ordering::SeqCst);
    let first = p1
        .fetch(&key, &policy(), async {
            proxy.hold_replies(writes);
            Ok::<u64, String>(db.load(Ordering::SeqCst))
        })
        .await;
    assert_eq!(first, Ok(7));
    until_stored(&admin, &p1, &key).await;
    db.store(8, Ordering::SeqCst);
    let here = tokio::spawn({
        let (p1, key) = (p1.clone(), key.clone());
        async move { p1.update(&key, newer(8)).await }
    });
    db.store(9, Ordering::SeqCst);
    assert!(p2.update(&key, newer(9)).await.unwrap());
    proxy.release_replies(writes);
    here.await.unwrap().unwrap();
    p1.settle().await;
    assert_eq!(read(&p1, &key, &db).await, Ok(9));
    assert_eq!(read(&p2, &key, &db).await, Ok(9));
    assert_no_state_left(&p1).await;
}

// ---------------------------------------------------------------------------------------------
// 3. A consistency loop.
// ---------------------------------------------------------------------------------------------

/// Readers in two processes (P1 with a near cache) and a writer that bumps a versioned row
/// then invalidates through P1, alternating with P2: a read that starts after an invalidation
/// returned must see at least the version that invalidation followed. Near reads are checked
/// only against P1's own invalidations (another process's copy may lag by `near_max_lag`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_of_misses_and_invalidations_never_reads_a_version_older_than_a_completed_write() {
    let server = RedisServer::start();
    let ns = "adv-loop";
    let p1 = cached_redis_tests::near_cache(&server.url(), ns, Duration::from_millis(500)).await;
    let p2 = server.cache(ns).await;
    let db = Arc::new(AtomicU64::new(0));
    // The newest version whose invalidation returned: through any process, and through P1.
    let done_any = Arc::new(AtomicU64::new(0));
    let done_p1 = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let keys: Vec<Key> = (0..3).map(|i| Key::raw(format!("loop:{i}"))).collect();
    let mut readers = Vec::new();
    for r in 0..4u64 {
        let (p1, p2, db, done_any, done_p1, stop, keys) = (
            p1.clone(),
            p2.clone(),
            db.clone(),
            done_any.clone(),
            done_p1.clone(),
            stop.clone(),
            keys.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut violations = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let key = &keys[(n % 3) as usize];
                let (floor_any, floor_p1) = (
                    done_any.load(Ordering::SeqCst),
                    done_p1.load(Ordering::SeqCst),
                );
                let (value, floor, who) = match (r + n) % 3 {
                    0 => (read(&p1, key, &db).await.unwrap(), floor_any, "p1"),
                    1 => (read_near(&p1, key, &db).await.unwrap(), floor_p1, "p1-near"),
                    _ => (read(&p2, key, &db).await.unwrap(), floor_any, "p2"),
                };
                if value < floor {
                    violations.push((who, value, floor));
                }
                n += 1;
                if n.is_multiple_of(16) {
                    tokio::task::yield_now().await;
                }
            }
            (n, violations)
        }));
    }
    for i in 1..=1500u64 {
        // One version per write, for every key (the row is shared): invalidate them all.
        db.store(i, Ordering::SeqCst);
        let through_p1 = i % 2 == 0;
        for key in &keys {
            if through_p1 {
                p1.invalidate(key).await.unwrap();
            } else {
                p2.invalidate(key).await.unwrap();
            }
        }
        done_any.store(i, Ordering::SeqCst);
        if through_p1 {
            done_p1.store(i, Ordering::SeqCst);
        }
        if i.is_multiple_of(8) {
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut reads = 0;
    for reader in readers {
        let (n, violations) = reader.await.unwrap();
        reads += n;
        assert!(
            violations.is_empty(),
            "stale reads: {:?}",
            &violations[..violations.len().min(10)]
        );
    }
    println!("{reads} reads, stats {:?}", p1.stats());
    assert!(reads > 500, "the readers ran: {reads}");
    p1.settle().await;
    p2.settle().await;
    for key in &keys {
        assert_eq!(read(&p1, key, &db).await, Ok(1500));
        assert_eq!(read(&p2, key, &db).await, Ok(1500));
    }
    assert_no_state_left(&p1).await;
    assert_no_state_left(&p2).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Cancellation, panics, many write-backs.
// ---------------------------------------------------------------------------------------------

/// Callers dropped while waiting in `done_with` and while waiting for a held verdict as
/// joiners, a loader that panics, and 200 distinct misses with their write-backs held: once
/// released, nothing is left in flight, every lease is gone and every value is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellations_panics_and_many_held_write_backs_leave_nothing_behind() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut admin = server.conn().await;
    let ns = "adv-cancel";
    let builder = Cache::builder(&proxy.url())
        .namespace(ns)
        .op_timeout(Duration::from_secs(5));
    let (p1, writes) = proxy.cache_and_writes(&mut admin, builder).await;
    let db = Arc::new(AtomicU64::new(1));

    // A caller dropped in `done_with`, and a joiner dropped while the verdict is held.
    let key = Key::raw("row:c1");
    let (loading, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let leader = tokio::spawn({
        let (p1, key, loading, go) = (p1.clone(), key.clone(), loading.clone(), go.clone());
        async move {
            p1.fetch(&key, &policy(), async {
                loading.notify_one();
                go.notified().await;
                Ok::<u64, String>(1)
            })
            .await
        }
    });
    loading.notified().await;
    let joiner = tokio::spawn({
        let (p1, key, db) = (p1.clone(), key.clone(), db.clone());
        async move { read(&p1, &key, &db).await }
    });
    assert!(
        eventually(Duration::from_secs(5), || async {
            p1.stats().coalesced >= 1
        })
        .await
    );
    proxy.hold_replies(writes);
    go.notify_one();
    assert_eq!(leader.await.unwrap(), Ok(1));
    let waiting = tokio::spawn({
        let (p1, key, db) = (p1.clone(), key.clone(), db.clone());
        async move { read(&p1, &key, &db).await }
    });
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(
        !joiner.is_finished() && !waiting.is_finished(),
        "both wait for the held write-back"
    );
    joiner.abort();
    waiting.abort();
    let _ = joiner.await;
    let _ = waiting.await;

    proxy.release_replies(writes);
    p1.settle().await;
    assert_eq!(cached_redis::__private::in_flight(&p1).0, 0);

    // 200 distinct misses: all take their lease, then the writes connection's replies are
    // held and the loads return.
    let (started, gate) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(tokio::sync::Semaphore::new(0)),
    );
    let mut many = Vec::new();
    for i in 0..200u64 {
        let (p1, started, gate) = (p1.clone(), started.clone(), gate.clone());
        many.push(tokio::spawn(async move {
            p1.fetch(&Key::raw(format!("many:{i}")), &policy(), async move {
                started.fetch_add(1, Ordering::SeqCst);
                let _permit = gate.acquire().await.unwrap();
                Ok::<u64, String>(i)
            })
            .await
        }));
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            started.load(Ordering::SeqCst) == 200
        })
        .await
    );
    proxy.hold_replies(writes);
    gate.add_permits(200);
    for (i, call) in many.into_iter().enumerate() {
        assert_eq!(
            call.await.unwrap(),
            Ok(i as u64),
            "answered before its write-back"
        );
    }
    let pending = cached_redis::__private::in_flight(&p1).0;
    assert_eq!(pending, 200, "one write-back each, still held");
    proxy.release_replies(writes);
    p1.settle().await;
    assert_eq!(cached_redis::__private::in_flight(&p1).0, 0);
    for i in (0..200u64).step_by(37) {
        let stored = get_raw(&mut admin, &p1.redis_key(&Key::raw(format!("many:{i}")))).await;
        assert!(stored.is_some(), "many:{i} stored");
    }
    assert_eq!(
        read(&p1, &key, &db).await,
        Ok(1),
        "stored by the write-back"
    );

    // A loader that panics: its lease goes at once, and nothing is left.
    let key = Key::raw("row:panics");
    let panicked = tokio::spawn({
        let p1 = p1.clone();
        let key = key.clone();
        async move {
            let _: Result<u64, String> = p1
                .fetch(&key, &policy(), async { panic!("loader bug") })
                .await;
        }
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    let lease = format!("{}:lease", p1.redis_key(&key));
    assert!(
        eventually(Duration::from_secs(2), || {
            let (mut admin, lease) = (admin.clone(), lease.clone());
            async move { get_raw(&mut admin, &lease).await.is_none() }
        })
        .await,
        "the panicking loader's lease is released well before lock_ttl"
    );
    assert_eq!(read(&p1, &key, &db).await, Ok(1));
    p1.settle().await;
    assert_no_state_left(&p1).await;
    let leases = cached_redis_tests::scan_keys(&mut admin, &format!("{ns}:*:lease")).await;
    assert!(leases.is_empty(), "leases left: {leases:?}");
}

/// A write-back left running when its runtime shuts down: a later call from another runtime
/// does not wait for it, loads again (its lease expires) or reads, and nothing is left.
#[test]
fn a_write_back_dropped_at_runtime_shutdown_leaves_nobody_waiting() {
    let server = RedisServer::start();
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let proxy = main.block_on(Proxy::start(server.port()));
    let (cache, writes) = main.block_on(async {
        let mut admin = server.conn().await;
        let builder = Cache::builder(&proxy.url())
            .namespace("adv-shutdown")
            .op_timeout(Duration::from_secs(5))
            .lock_ttl(Duration::from_millis(500));
        proxy.cache_and_writes(&mut admin, builder).await
    });
    let key = Key::raw("row:shutdown");
    {
        let other = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let first: Result<u64, String> = other.block_on(cache.fetch(&key, &policy(), async {
            proxy.hold_replies(writes);
            Ok(1)
        }));
        assert_eq!(first, Ok(1));
        drop(other); // shuts down with the write-back (never polled) in it
    }
    main.block_on(async {
        proxy.release_replies(writes);
        let later = tokio::time::timeout(
            Duration::from_secs(3),
            cache.fetch(&key, &policy(), async { Ok::<u64, String>(2) }),
        )
        .await;
        assert!(
            later.is_ok(),
            "a later call does not wait for a dropped write-back"
        );
        tokio::time::timeout(Duration::from_secs(3), cache.settle())
            .await
            .expect("settle returns");
        assert_no_state_left(&cache).await;
    });
}
