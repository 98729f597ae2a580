//! Guarantee 1: N concurrent callers of one cold key run the loader once, in one process and
//! across OS processes; waiters are woken promptly, and load themselves only after `lock_ttl`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, redis_cached};
use cached_redis_tests::RedisServer;
use tokio::sync::Barrier;

static LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "item:<id>", ttl = "60s", cache = cache)]
async fn slow_item(cache: &Cache, id: u64, loader: Duration) -> Result<String, String> {
    LOADS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(loader).await;
    Ok(format!("item-{id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_in_one_process_load_once() {
    let server = RedisServer::start();
    let cache = server.cache("stampede").await;
    let callers = 200;
    let barrier = Arc::new(Barrier::new(callers));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                slow_item(&cache, 1, Duration::from_millis(100)).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().as_deref(), Ok("item-1"));
    }
    assert_eq!(LOADS.load(Ordering::SeqCst), 1, "one load for 200 callers");
    let stats = cache.stats();
    assert_eq!(stats.loads, 1);
    assert!(
        stats.coalesced >= 150,
        "most callers joined the load: {stats:?}"
    );
    // The next call is a hit, with no load.
    assert_eq!(
        slow_item(&cache, 1, Duration::ZERO).await.as_deref(),
        Ok("item-1")
    );
    assert_eq!(LOADS.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().hits, stats.hits + 1);
}

/// Two caches on one Redis behave like two processes: separate flights, one Redis lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_in_another_process_is_woken_within_milliseconds_of_the_write() {
    let server = RedisServer::start();
    let loads = Arc::new(AtomicU32::new(0));
    let (a, b) = (server.cache("wake").await, server.cache("wake").await);
    let key = cached_redis::Key::raw("wake:1");
    let policy = cached_redis::Policy::new("wake", Duration::from_secs(60)).unwrap();
    let load = |loads: Arc<AtomicU32>, ms| async move {
        loads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, String>(format!("loaded after {ms} ms"))
    };

    let leader = {
        let (a, key, loads) = (a.clone(), key.clone(), loads.clone());
        tokio::spawn(async move {
            let value = a.fetch(&key, &policy, load(loads, 300)).await;
            (value, Instant::now())
        })
    };
    // Let the leader take the lease, then wait on it from "the other process".
    assert!(
        cached_redis_tests::eventually(Duration::from_secs(2), || async { a.stats().loads == 1 })
            .await
    );
    let waiter = b.fetch(&key, &policy, load(loads.clone(), 0)).await;
    let woken_at = Instant::now();
    let (leader_value, leader_done_at) = leader.await.unwrap();
    assert_eq!(waiter, leader_value, "the waiter got the leader's value");
    assert_eq!(waiter.as_deref(), Ok("loaded after 300 ms"));
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(b.stats().lock_waits, 1);
    let delay = woken_at.saturating_duration_since(leader_done_at);
    assert!(
        delay < Duration::from_millis(30),
        "woken {delay:?} after the load was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_is_never_released_is_taken_over_after_lock_ttl() {
    let server = RedisServer::start();
    let cache = Cache::builder(&server.url())
        .namespace("orphan")
        .lock_ttl(Duration::from_millis(400))
        .build()
        .await
        .unwrap();
    let key = cached_redis::Key::raw("orphan:1");
    // A loader that died without releasing: its lease lives for lock_ttl.
    let mut conn = server.conn().await;
    let lease = format!("{}:lease", cache.redis_key(&key));
    let _: () = redis::cmd("SET")
        .arg(&lease)
        .arg("dead-token")
        .arg("PX")
        .arg(400)
        .query_async(&mut conn)
        .await
        .unwrap();
    let policy = cached_redis::Policy::new("orphan", Duration::from_secs(60)).unwrap();
    let started = Instant::now();
    let value: Result<u32, String> = cache.fetch(&key, &policy, async { Ok(7) }).await;
    let waited = started.elapsed();
    assert_eq!(value, Ok(7));
    assert!(
        waited >= Duration::from_millis(350),
        "took over too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(800),
        "took over too late: {waited:?}"
    );
    let stored = cached_redis_tests::get_raw(&mut conn, &cache.redis_key(&key)).await;
    assert!(stored.is_some(), "the take-over stored its value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_in_four_processes_load_once() {
    let server = RedisServer::start();
    let (processes, tasks_each, loader_ms) = (4, 25, 200);
    let child = env!("CARGO_BIN_EXE_cached-redis-child");
    let stampede = cached_redis_tests::stampede_in_processes(
        child,
        &server.url(),
        "procs",
        9,
        (processes, tasks_each, loader_ms),
    )
    .await;
    assert_eq!(stampede.loads, 1, "one load across {processes} processes");
    assert_eq!(stampede.latencies_ms.len(), processes * tasks_each);
    let slowest = stampede.latencies_ms.last().copied().unwrap();
    assert!(
        slowest < loader_ms as f64 + 100.0,
        "every caller got the value soon after the load: slowest {slowest:.1} ms"
    );
}
