//! A function with `stale` or `refresh = "early"` whose body borrows nothing from its caller
//! refreshes in the background: every caller that finds the entry due, the one that takes the
//! refresh's lease included, is answered with it at once, and the load and its write-back run
//! on in a task of their own (one across all processes), refused like any load if an
//! invalidation overtakes them. A body that uses a borrowed argument refreshes in its caller
//! (`stale.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cached_redis::{Cache, redis_cached};
use cached_redis_tests::stale::{STALE, expire_in};
use cached_redis_tests::{Gate, RedisServer, eventually};
use tokio::sync::mpsc;

/// The database: its first load (`loads` counts them) answers at once, later ones wait at
/// `gate`. `gate` and `loads` are owned, so the body borrows nothing: `cache` is not named in it.
#[redis_cached(key = "row:<id>", ttl = "60s", stale = "60s", cache = cache, skip = "gate, loads")]
async fn row(cache: &Cache, gate: Gate, loads: Arc<AtomicU32>, id: u64) -> Result<u32, String> {
    let n = loads.fetch_add(1, Ordering::SeqCst);
    if n > 0 {
        gate.passed().await;
    }
    Ok(u32::try_from(id).unwrap() * 100 + n)
}

/// A row's first load done and stored, and the entry aged past its TTL: the next call
/// refreshes it. Returns the gate the refresh waits at and the load count.
async fn stale_row(server: &RedisServer, cache: &Cache, id: u64) -> (Gate, Arc<AtomicU32>) {
    let (gate, loads) = (Gate::new(), Arc::new(AtomicU32::new(0)));
    let first = row(cache, gate.clone(), loads.clone(), id).await;
    assert_eq!(first, Ok(u32::try_from(id).unwrap() * 100));
    cache.settle().await;
    let mut conn = server.conn().await;
    let left = STALE.as_millis() as u64 / 2;
    assert!(expire_in(&mut conn, &cache.redis_key(&row_key(id)), left).await);
    (gate, loads)
}

/// The call's answer, which must come while the refresh is held.
async fn at_once<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("answered while the refresh is held")
}

/// Whether `loads` reaches `n` (a background refresh's load starts after its caller returned).
async fn loaded(loads: &Arc<AtomicU32>, n: u32) -> bool {
    eventually(Duration::from_secs(20), || async {
        loads.load(Ordering::SeqCst) == n
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_of_three_processes_is_answered_at_once_while_one_refresh_runs() {
    let server = RedisServer::start();
    let caches = [
        server.cache("bg").await,
        server.cache("bg").await,
        server.cache("bg").await,
    ];
    let (gate, loads) = stale_row(&server, &caches[0], 1).await;
    let (sender, mut answers) = mpsc::unbounded_channel();
    for cache in &caches {
        for _ in 0..100 {
            let (cache, gate, loads) = (cache.clone(), gate.clone(), loads.clone());
            let sender = sender.clone();
            tokio::spawn(async move {
                let _ = sender.send(row(&cache, gate, loads, 1).await);
            });
        }
    }
    // The refresh is held at the gate: all 300 callers are answered before it opens.
    for _ in 0..300 {
        let value = at_once(answers.recv()).await.unwrap();
        assert_eq!(value, Ok(100), "the stale value");
    }
    assert!(loaded(&loads, 2).await, "one refresh");
    let stats: Vec<_> = caches.iter().map(Cache::stats).collect();
    let refreshes: u64 = stats.iter().map(|s| s.refreshes).sum();
    assert_eq!(refreshes, 1, "{stats:?}");
    assert_eq!(stats.iter().map(|s| s.stale_served).sum::<u64>(), 300);
    gate.open();
    for cache in &caches {
        cache.settle().await;
    }
    // `settle` waited for the background refresh and its write-back.
    assert_eq!(row(&caches[2], gate, loads.clone(), 1).await, Ok(101));
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

/// A background refresh that an invalidation overtook stores nothing, though its caller is
/// long gone; the read after the invalidation loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_refresh_an_invalidation_overtook_stores_nothing() {
    let server = RedisServer::start();
    let cache = server.cache("bg-race").await;
    let (gate, loads) = stale_row(&server, &cache, 1).await;
    // Answered at once; the refresh's task starts its load, which waits at the gate.
    let answer = at_once(row(&cache, gate.clone(), loads.clone(), 1)).await;
    assert_eq!(answer, Ok(100));
    assert!(loaded(&loads, 2).await);
    invalidate_row(&cache, 1).await.unwrap();
    gate.open();
    cache.settle().await;
    assert_eq!(cache.stats().stale_refused, 1, "{:?}", cache.stats());
    let after = row(&cache, gate, loads, 1).await;
    assert_eq!(after, Ok(102), "loaded after it");
}

/// The caller that started the refresh is cancelled (its task aborted): the refresh runs on
/// and stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_outlives_its_cancelled_caller() {
    let server = RedisServer::start();
    let cache = server.cache("bg-cancel").await;
    let (gate, loads) = stale_row(&server, &cache, 1).await;
    let caller = {
        let (cache, gate, loads) = (cache.clone(), gate.clone(), loads.clone());
        tokio::spawn(async move { at_once(row(&cache, gate, loads, 1)).await })
    };
    // Once the refresh's load waits at the gate, the caller is cancelled (if it has not
    // returned already).
    assert!(loaded(&loads, 2).await);
    caller.abort();
    gate.open();
    cache.settle().await;
    let after = row(&cache, gate, loads, 1).await;
    assert_eq!(after, Ok(101), "the refresh stored");
}

/// As [`row`], with `background = false`: its refresh runs in the caller that takes the
/// lease, who waits for the load.
#[redis_cached(key = "in-caller:<id>", ttl = "60s", stale = "60s", cache = cache, skip = "gate, loads", background = false)]
async fn in_caller(
    cache: &Cache,
    gate: Gate,
    loads: Arc<AtomicU32>,
    id: u64,
) -> Result<u32, String> {
    let n = loads.fetch_add(1, Ordering::SeqCst);
    if n > 0 {
        gate.passed().await;
    }
    Ok(u32::try_from(id).unwrap() * 100 + n)
}

/// As [`row`], its body naming a `&'static str` argument (which the signature alone would
/// refresh in the caller), with `background = true`.
#[redis_cached(key = "labelled:<id>", ttl = "60s", stale = "60s", cache = cache, skip = "gate, loads, label", background = true)]
async fn labelled(
    cache: &Cache,
    gate: Gate,
    loads: Arc<AtomicU32>,
    label: &'static str,
    id: u64,
) -> Result<String, String> {
    let n = loads.fetch_add(1, Ordering::SeqCst);
    if n > 0 {
        gate.passed().await;
    }
    Ok(format!("{label} {id} v{n}"))
}

/// `background` overrides the signature: `false` keeps the refresh in its caller (who waits
/// at the gate: the call is still pending while the gate is shut, then gets the load);
/// `true` runs it in the background (the caller is answered at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_overrides_where_the_signature_would_refresh() {
    let server = RedisServer::start();
    let cache = server.cache("bg-override").await;
    let mut conn = server.conn().await;
    let left = STALE.as_millis() as u64 / 2;

    let (gate, loads) = (Gate::new(), Arc::new(AtomicU32::new(0)));
    assert_eq!(
        in_caller(&cache, gate.clone(), loads.clone(), 1).await,
        Ok(100)
    );
    cache.settle().await;
    assert!(expire_in(&mut conn, &cache.redis_key(&in_caller_key(1)), left).await);
    let call = tokio::spawn({
        let (cache, gate, loads) = (cache.clone(), gate.clone(), loads.clone());
        async move { in_caller(&cache, gate, loads, 1).await }
    });
    assert!(loaded(&loads, 2).await, "the refresh is loading");
    assert!(!call.is_finished(), "its caller waits for it");
    gate.open();
    assert_eq!(
        at_once(call).await.unwrap(),
        Ok(101),
        "the caller's own load"
    );

    let (gate, loads) = (Gate::new(), Arc::new(AtomicU32::new(0)));
    let first = labelled(&cache, gate.clone(), loads.clone(), "shelf", 1).await;
    assert_eq!(first.as_deref(), Ok("shelf 1 v0"));
    cache.settle().await;
    assert!(expire_in(&mut conn, &cache.redis_key(&labelled_key(1)), left).await);
    let stale = at_once(labelled(&cache, gate.clone(), loads.clone(), "shelf", 1)).await;
    assert_eq!(stale.as_deref(), Ok("shelf 1 v0"), "answered at once");
    assert!(loaded(&loads, 2).await);
    gate.open();
    cache.settle().await;
    let fresh = labelled(&cache, gate, loads, "shelf", 1).await;
    assert_eq!(fresh.as_deref(), Ok("shelf 1 v1"));
}
