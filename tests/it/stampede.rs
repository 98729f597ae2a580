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

    // The leader's load is held until the waiter is subscribed.
    let release = Arc::new(tokio::sync::Notify::new());
    let leader = {
        let (a, key, loads, release) = (a.clone(), key.clone(), loads.clone(), release.clone());
        tokio::spawn(async move {
            let loader = async move {
                release.notified().await;
                load(loads, 0).await
            };
            let value = a.fetch(&key, &policy, loader).await;
            (value, Instant::now())
        })
    };
    assert!(
        cached_redis_tests::eventually(Duration::from_secs(5), || async { a.stats().loads == 1 })
            .await
    );
    let waiter = {
        let (b, key, loads) = (b.clone(), key.clone(), loads.clone());
        tokio::spawn(async move {
            let value = b.fetch(&key, &policy, load(loads, 0)).await;
            (value, Instant::now())
        })
    };
    let channel = format!("{}:wake", b.redis_key(&key));
    let admin = server.conn().await;
    assert!(
        cached_redis_tests::eventually(Duration::from_secs(5), || async {
            cached_redis_tests::numsub(&mut admin.clone(), &channel).await == 1
        })
        .await,
        "the waiter subscribed"
    );
    release.notify_one();
    let (leader_value, leader_done_at) = leader.await.unwrap();
    let (waiter_value, woken_at) = waiter.await.unwrap();
    assert_eq!(
        waiter_value, leader_value,
        "the waiter got the leader's value"
    );
    assert_eq!(waiter_value.as_deref(), Ok("loaded after 0 ms"));
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(b.stats().lock_waits, 1);
    let delay = woken_at.saturating_duration_since(leader_done_at);
    println!("woken {delay:?} after the load was stored");
    // Well under the 500 ms a subscribed waiter goes between checks of its own: the message
    // woke it, on a busy machine too.
    assert!(
        delay < Duration::from_millis(250),
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
    let set_at = Instant::now();
    let _: () = redis::cmd("SET")
        .arg(&lease)
        .arg("dead-token")
        .arg("PX")
        .arg(400)
        .query_async(&mut conn)
        .await
        .unwrap();
    let policy = cached_redis::Policy::new("orphan", Duration::from_secs(60)).unwrap();
    let value: Result<u32, String> = cache.fetch(&key, &policy, async { Ok(7) }).await;
    let waited = set_at.elapsed();
    assert_eq!(value, Ok(7));
    assert!(
        waited >= Duration::from_millis(400),
        "took over before the lease expired: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(2400),
        "took over too late: {waited:?}"
    );
    cache.settle().await;
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
    // Woken by the store, not by the 5 s lease's expiry.
    assert!(
        slowest < loader_ms as f64 + 2_000.0,
        "every caller got the value soon after the load: slowest {slowest:.1} ms"
    );
}
