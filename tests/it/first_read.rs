//! A function whose calls nearly all miss starts each call with the lease script, which
//! answers with the value or takes the lease: a miss waits for one round trip, not two. The
//! reads connection's replies are held at a proxy: a call that sends a `GET` waits for them
//! (for `op_timeout`, here half a minute), one that starts with the script does not.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use cached_redis::{Cache, Key, Policy};
use cached_redis_tests::{Gate, Proxy, RedisServer, eventually};

fn policy() -> Policy {
    Policy::new("scan", Duration::from_secs(60)).unwrap()
}

/// Reads row `id` through `cache`, counting loads.
async fn call(cache: &Cache, id: u32, loads: &AtomicU32) -> Result<u32, String> {
    let key = Key::raw(format!("row:{id}"));
    let load = async {
        loads.fetch_add(1, SeqCst);
        Ok(id)
    };
    cache.fetch(&key, &policy(), load).await
}

/// `count` misses of rows from `first` on: enough for the function's calls to start with the
/// lease script.
async fn misses(cache: &Cache, first: u32, count: u32, loads: &AtomicU32) {
    for id in first..first + count {
        assert_eq!(call(cache, id, loads).await, Ok(id));
    }
    cache.settle().await;
}

/// A cache through `proxy` whose calls wait half a minute for a held reply, and the proxy's
/// index of its reads connection (the client whose last command was a `GET`).
async fn cache_and_reads(
    proxy: &Proxy,
    admin: &mut redis::aio::MultiplexedConnection,
    namespace: &str,
) -> (Cache, usize) {
    let (cache, _writes) = cached_redis_tests::rows::proxied(proxy, admin, namespace).await;
    let read = |fields: &[&str]| fields.contains(&"cmd=get");
    let reads = proxy.connection_of_client(admin, read).await;
    (cache, reads.expect("the reads connection"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_whose_calls_keep_missing_is_answered_without_a_get() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut admin = server.conn().await;
    let (cache, reads) = cache_and_reads(&proxy, &mut admin, "first-read").await;
    let loads = AtomicU32::new(0);
    misses(&cache, 0, 40, &loads).await;

    proxy.hold_replies(reads);
    let within = Duration::from_secs(5);
    let missed = tokio::time::timeout(within, call(&cache, 1000, &loads)).await;
    assert_eq!(missed, Ok(Ok(1000)), "a miss is answered without a GET");
    assert_eq!(loads.load(SeqCst), 41);
    let before = cache.stats();
    let hit = tokio::time::timeout(within, call(&cache, 7, &loads)).await;
    assert_eq!(
        hit,
        Ok(Ok(7)),
        "a hit too: the lease script answers the value"
    );
    let stats = cache.stats();
    assert_eq!(loads.load(SeqCst), 41, "not loaded");
    assert_eq!(
        (stats.hits, stats.misses),
        (before.hits + 1, before.misses),
        "counted as a hit: {stats:?}"
    );
    proxy.release_replies(reads);
    cache.settle().await;
    cached_redis_tests::assert_no_state_left(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_whose_calls_mostly_hit_reads_first_again() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut admin = server.conn().await;
    let (cache, reads) = cache_and_reads(&proxy, &mut admin, "first-hits").await;
    let loads = AtomicU32::new(0);
    misses(&cache, 0, 40, &loads).await;
    // Hits: the function's calls start with a GET again.
    for id in 0..10 {
        assert_eq!(call(&cache, id, &loads).await, Ok(id));
    }
    assert_eq!(loads.load(SeqCst), 40);

    proxy.hold_replies(reads);
    let miss = tokio::spawn({
        let cache = cache.clone();
        async move {
            let loads = AtomicU32::new(0);
            let value = call(&cache, 2000, &loads).await;
            (value, loads.into_inner())
        }
    });
    tokio::pin!(miss);
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut miss).await;
    assert!(waited.is_err(), "the miss waits for its held GET");
    proxy.release_replies(reads);
    assert_eq!(miss.await.unwrap(), (Ok(2000), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_start_with_the_lease_script_share_one_load_across_processes() {
    let server = RedisServer::start();
    let one = server.cache("first-stampede").await;
    let two = server.cache("first-stampede").await; // another process
    let warm = AtomicU32::new(0);
    misses(&one, 0, 40, &warm).await;
    misses(&two, 100, 40, &warm).await;

    let (gate, loads) = (
        std::sync::Arc::new(Gate::new()),
        std::sync::Arc::new(AtomicU32::new(0)),
    );
    let mut calls = Vec::new();
    for cache in [&one, &two] {
        for _ in 0..20 {
            let (cache, gate, loads) = (cache.clone(), gate.clone(), loads.clone());
            calls.push(tokio::spawn(async move {
                let key = Key::raw("row:9999");
                let load = async {
                    loads.fetch_add(1, SeqCst);
                    gate.passed().await;
                    Ok::<u32, String>(9999)
                };
                cache.fetch(&key, &policy(), load).await
            }));
        }
    }
    // Every caller waits: 19 in each process on its leader, one leader on the other's lease.
    let waiting = || async {
        let (a, b) = (one.stats(), two.stats());
        a.coalesced + b.coalesced == 38 && a.lock_waits + b.lock_waits == 1
    };
    assert!(eventually(Duration::from_secs(10), waiting).await);
    gate.open();
    for call in calls {
        assert_eq!(call.await.unwrap(), Ok(9999));
    }
    assert_eq!(
        loads.load(SeqCst),
        1,
        "one load for 40 callers in two processes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_pause_sends_the_function_back_to_get() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder("first-paused")
        .op_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let loads = AtomicU32::new(0);
    misses(&cache, 0, 40, &loads).await;
    let mut admin = server.conn().await;
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(20_000)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();

    // The first call's lease script is held by the pause: past half its `op_timeout` it reads
    // the entry with a GET, which reads are still served, within the other half.
    let errors = cache.stats().redis_errors;
    assert_eq!(call(&cache, 7, &loads).await, Ok(7));
    let stats = cache.stats();
    assert_eq!(stats.redis_errors, errors + 1, "its script timed out");
    // The next calls start with a GET: none waits for a held script.
    for id in 8..18 {
        assert_eq!(call(&cache, id, &loads).await, Ok(id));
    }
    let stats = cache.stats();
    assert_eq!(stats.redis_errors, errors + 1, "{stats:?}");
    assert_eq!(loads.load(SeqCst), 40, "every call a hit");
    let () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut admin)
        .await
        .unwrap();
}
