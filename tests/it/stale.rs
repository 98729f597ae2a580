//! `stale` and `refresh = "early"`: an entry past its TTL is served at once while one caller,
//! in one process, refreshes it under the lease; a refresh an invalidation overtook stores
//! nothing; early refresh keeps a steadily read key from expiring in front of its callers.
//! An entry is made stale by aging it into the stale window (`stale::expire_in`), not
//! by waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, redis_cached};
use cached_redis_tests::stale::{STALE, TTL, held_refresh, loader, make_stale, policy};
use cached_redis_tests::{Gate, RedisServer, command_calls, get_raw, pttl};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_is_served_at_once_while_one_caller_of_three_processes_refreshes_it() {
    let server = RedisServer::start();
    let caches = [
        server.cache("stale").await,
        server.cache("stale").await,
        server.cache("stale").await,
    ];
    let (key, loads, gate) = (
        Key::raw("catalog"),
        Arc::new(AtomicU32::new(0)),
        Gate::new(),
    );
    let policy = policy("catalog");
    let first = caches[0].fetch(&key, &policy, loader(&loads, &gate)).await;
    assert_eq!(first.as_deref(), Ok("v0"));
    caches[0].settle().await;
    let mut conn = server.conn().await;
    let stored = pttl(&mut conn, &caches[0].redis_key(&key)).await;
    assert!(
        stored > 61_000,
        "Redis keeps the entry for ttl + stale: {stored} ms"
    );
    make_stale(&server, &caches[0], &key).await;

    let (sender, mut answers) = mpsc::unbounded_channel();
    for cache in &caches {
        for _ in 0..100 {
            let (cache, key, loads, gate, sender) = (
                cache.clone(),
                key.clone(),
                loads.clone(),
                gate.clone(),
                sender.clone(),
            );
            tokio::spawn(async move {
                let started = Instant::now();
                let value = cache.fetch(&key, &policy, loader(&loads, &gate)).await;
                let _ = sender.send((value, started.elapsed()));
            });
        }
    }
    // The refreshing caller waits at the gate: every other caller is answered before it opens.
    for _ in 0..299 {
        let (value, _) = tokio::time::timeout(Duration::from_secs(20), answers.recv())
            .await
            .expect("299 callers answered while the refresh is held")
            .unwrap();
        assert_eq!(value.as_deref(), Ok("v0"), "the stale value");
    }
    assert!(
        answers.try_recv().is_err(),
        "the refreshing caller waits for its load"
    );
    gate.open();
    let (value, _) = answers.recv().await.unwrap();
    assert_eq!(
        value.as_deref(),
        Ok("v1"),
        "the refresh's own caller gets its load"
    );
    assert_eq!(
        loads.load(Ordering::SeqCst),
        2,
        "one refresh for 300 callers"
    );
    for cache in &caches {
        cache.settle().await;
    }
    let stats: Vec<_> = caches.iter().map(Cache::stats).collect();
    assert_eq!(
        stats.iter().map(|s| s.refreshes).sum::<u64>(),
        1,
        "{stats:?}"
    );
    assert_eq!(
        stats.iter().map(|s| s.stale_served).sum::<u64>(),
        299,
        "{stats:?}"
    );
    // The refreshed entry is fresh again, for ttl + stale in Redis.
    let again = caches[1].fetch(&key, &policy, loader(&loads, &gate)).await;
    assert_eq!(again.as_deref(), Ok("v1"));
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    assert!(pttl(&mut conn, &caches[1].redis_key(&key)).await > 61_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_an_invalidation_overtook_stores_nothing() {
    let server = RedisServer::start();
    let cache = server.cache("stale-race").await;
    let (key, policy, loads, gate, refreshing) = held_refresh(&server, &cache, "stock").await;
    // The write lands while the refresh waits at the gate.
    cache.invalidate(&key).await.unwrap();
    gate.open();
    assert_eq!(refreshing.await.unwrap().as_deref(), Ok("v1"));
    cache.settle().await;
    assert_eq!(
        cache.stats().stale_refused,
        1,
        "the refresh's write-back was refused"
    );
    let after = cache.fetch(&key, &policy, loader(&loads, &gate)).await;
    assert_eq!(
        after.as_deref(),
        Ok("v2"),
        "the read after the invalidation loads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_entry_is_never_served_stale() {
    let server = RedisServer::start();
    let cache = server.cache("stale-gone").await;
    let (key, loads, gate) = (Key::raw("price"), Arc::new(AtomicU32::new(0)), Gate::new());
    gate.open();
    let policy = policy("price");
    assert_eq!(
        cache
            .fetch(&key, &policy, loader(&loads, &gate))
            .await
            .as_deref(),
        Ok("v0")
    );
    cache.settle().await;
    make_stale(&server, &cache, &key).await;
    cache.invalidate(&key).await.unwrap();
    let after = cache.fetch(&key, &policy, loader(&loads, &gate)).await;
    assert_eq!(after.as_deref(), Ok("v1"));
    assert_eq!(cache.stats().stale_served, 0);
}

/// The entry carries its soft expiry (`exp`): a hit is one `GET` (no `PTTL`), Redis keeps the
/// entry `stale` past it, and an entry written before soft expiries were stored is read and
/// aged by its load time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_is_one_get_and_reads_the_soft_expiry_in_the_entry() {
    let server = RedisServer::start();
    let cache = server.cache("stale-exp").await;
    let mut conn = server.conn().await;
    let (key, loads, gate) = (Key::raw("exp"), Arc::new(AtomicU32::new(0)), Gate::new());
    gate.open();
    let policy = policy("exp");
    let fetch = || cache.fetch(&key, &policy, loader(&loads, &gate));
    assert_eq!(fetch().await.as_deref(), Ok("v0"));
    cache.settle().await;
    let redis_key = cache.redis_key(&key);
    let stored = get_raw(&mut conn, &redis_key).await.unwrap();
    let envelope: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    let (at, exp) = (envelope["at"].as_u64().unwrap(), envelope["exp"].as_u64());
    assert_eq!(exp, Some(at + TTL.as_millis() as u64), "{envelope}");
    let kept = pttl(&mut conn, &redis_key).await;
    assert!(kept > (TTL + STALE).as_millis() as i64 - 5_000, "{kept}");

    let (gets, pttls) = (
        command_calls(&mut conn, "get").await,
        command_calls(&mut conn, "pttl").await,
    );
    for _ in 0..10 {
        assert_eq!(fetch().await.as_deref(), Ok("v0"));
    }
    assert_eq!(command_calls(&mut conn, "get").await - gets, 10);
    assert_eq!(command_calls(&mut conn, "pttl").await - pttls, 0, "no PTTL");

    // Written by a build before soft expiries: no `exp`, loaded a TTL and a second ago.
    let mut old = envelope.clone();
    old.as_object_mut().unwrap().remove("exp");
    old["at"] = (at - TTL.as_millis() as u64 - 1_000).into();
    let _: () = redis::cmd("SET")
        .arg(&redis_key)
        .arg(serde_json::to_vec(&old).unwrap())
        .arg("KEEPTTL")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        fetch().await.as_deref(),
        Ok("v1"),
        "past its TTL: refreshed"
    );
    assert_eq!(cache.stats().refreshes, 1);
    cache.settle().await;
    assert_eq!(fetch().await.as_deref(), Ok("v1"));
}

static FLAKY_LOADS: AtomicU32 = AtomicU32::new(0);

/// The attribute's form, with an early refresh whose load fails: the entry, still fresh,
/// answers its caller.
#[redis_cached(key = "quote:<id>", ttl = "60s", refresh = "early", beta = 1000.0, cache = cache, skip = "fail")]
async fn quote(cache: &Cache, id: u64, fail: bool) -> Result<String, String> {
    let n = FLAKY_LOADS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(40)).await;
    if fail {
        return Err("database down".into());
    }
    Ok(format!("quote {id} #{n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_refresh_that_fails_answers_with_the_fresh_entry() {
    let server = RedisServer::start();
    let cache = server.cache("early-fail").await;
    assert_eq!(quote(&cache, 1, false).await.as_deref(), Ok("quote 1 #0"));
    cache.settle().await;
    // 40 ms loads with beta 1000: a hit a minute before expiry draws a refresh every time
    // (P = exp(-60 s / 40 s) ≈ 0.22 per hit; 40 tries).
    let mut refreshed_or_not = Vec::new();
    for _ in 0..40 {
        refreshed_or_not.push(quote(&cache, 1, true).await);
    }
    assert!(
        refreshed_or_not
            .iter()
            .all(|r| r.as_deref() == Ok("quote 1 #0"))
    );
    // The body borrows nothing: its refreshes run in the background.
    cache.settle().await;
    assert!(cache.stats().refreshes > 0, "{:?}", cache.stats());
    assert_eq!(cache.stats().load_errors, cache.stats().refreshes);
}

static NEAR_EARLY_LOADS: AtomicU32 = AtomicU32::new(0);

/// `near` with early refresh: copies end when the refresh window opens (here at once: 40 ms
/// loads × beta 1000 × 3 is more than the TTL), so hits read Redis and draw their refreshes.
#[redis_cached(key = "near-early:<id>", ttl = "60s", near = "30s", refresh = "early", beta = 1000.0, cache = cache)]
async fn near_early(cache: &Cache, id: u64) -> Result<String, String> {
    let n = NEAR_EARLY_LOADS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(40)).await;
    Ok(format!("{id} #{n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_copy_of_an_early_refresh_function_ends_when_the_window_opens() {
    let server = RedisServer::start();
    let url = server.url();
    let cache = cached_redis_tests::near_cache(&url, "near-early", Duration::from_secs(5)).await;
    assert_eq!(near_early(&cache, 1).await.as_deref(), Ok("1 #0"));
    cache.settle().await;
    for _ in 0..40 {
        assert!(near_early(&cache, 1).await.is_ok());
        cache.settle().await;
    }
    let stats = cache.stats();
    assert_eq!(stats.near_hits, 0, "{stats:?}");
    assert!(stats.refreshes > 0, "hits drew refreshes: {stats:?}");
}

/// `Cache::fresh_for` reads the end of the TTL from the entry: the TTL's rest while fresh,
/// zero once past it (while Redis keeps it `stale` longer, as `Cache::ttl` says), `None` once
/// invalidated; for a function without `stale`, what `Cache::ttl` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_for_tells_a_fresh_entry_from_a_stale_one() {
    let server = RedisServer::start();
    let cache = server.cache("fresh-for").await;
    let (key, loads, gate) = (Key::raw("fresh"), Arc::new(AtomicU32::new(0)), Gate::new());
    gate.open();
    let policy = policy("fresh");
    assert_eq!(cache.fresh_for(&key).await.unwrap(), None);
    let _ = cache.fetch(&key, &policy, loader(&loads, &gate)).await;
    cache.settle().await;
    let fresh = cache.fresh_for(&key).await.unwrap().unwrap();
    assert!(
        fresh > TTL - Duration::from_secs(5) && fresh <= TTL,
        "{fresh:?}"
    );
    make_stale(&server, &cache, &key).await;
    assert_eq!(cache.fresh_for(&key).await.unwrap(), Some(Duration::ZERO));
    let kept = cache.ttl(&key).await.unwrap().unwrap();
    assert!(kept > Duration::from_secs(25), "Redis keeps it: {kept:?}");
    cache.invalidate(&key).await.unwrap();
    assert_eq!(cache.fresh_for(&key).await.unwrap(), None);

    let plain = cached_redis::Policy::new("plain", TTL).unwrap();
    let key = Key::raw("plain");
    let _ = cache.fetch(&key, &plain, loader(&loads, &gate)).await;
    cache.settle().await;
    let (fresh, ttl) = (
        cache.fresh_for(&key).await.unwrap(),
        cache.ttl(&key).await.unwrap(),
    );
    let (fresh, ttl) = (fresh.unwrap(), ttl.unwrap());
    assert!(
        fresh.abs_diff(ttl) < Duration::from_secs(1),
        "{fresh:?} {ttl:?}"
    );
}
