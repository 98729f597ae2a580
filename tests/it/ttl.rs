//! Guarantee 4: the stored PTTL lies in `[ttl - jitter, ttl]`, jitter spreads it, and the
//! loader runs again once the entry expires.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cached_redis::{Cache, Key, redis_cached};
use cached_redis_tests::{RedisServer, pttl};

#[redis_cached(key = "jittered:<id>", ttl = "60s", jitter = "10%", cache = cache)]
async fn jittered(cache: &Cache, id: u32) -> Result<u32, String> {
    Ok(id)
}

#[redis_cached(key = "fixed:<id>", ttl = "10s", jitter = "4s", cache = cache)]
async fn fixed_jitter(cache: &Cache, id: u32) -> Result<u32, String> {
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_ttls_lie_within_ttl_minus_jitter_and_ttl_and_spread() {
    let server = RedisServer::start();
    let cache = server.cache("ttl").await;
    let mut conn = server.conn().await;
    // Each PTTL is read a little after the store: add back the time since the call began (and
    // a millisecond, for both sides rounding down).
    let mut ttls = Vec::new();
    for id in 0..200 {
        let called = std::time::Instant::now();
        assert_eq!(jittered(&cache, id).await, Ok(id));
        cache.settle().await;
        let key = Key::builder().text("jittered:").part(&id).build();
        let left = pttl(&mut conn, &cache.redis_key(&key)).await;
        ttls.push((left, left + called.elapsed().as_millis() as i64 + 1));
    }
    let lo = ttls.iter().map(|(_, at_store)| *at_store).min().unwrap();
    let hi = ttls.iter().map(|(left, _)| *left).max().unwrap();
    assert!(
        lo >= 54_000 && hi <= 60_000,
        "PTTLs {lo}..={hi} outside [54s, 60s]"
    );
    assert!(
        hi - lo >= 3_000,
        "jitter should spread expiries: {lo}..={hi}"
    );

    let mut fixed = Vec::new();
    for id in 0..100 {
        let called = std::time::Instant::now();
        assert_eq!(fixed_jitter(&cache, id).await, Ok(id));
        cache.settle().await;
        let key = Key::builder().text("fixed:").part(&id).build();
        let left = pttl(&mut conn, &cache.redis_key(&key)).await;
        fixed.push((left, left + called.elapsed().as_millis() as i64 + 1));
    }
    let lo = fixed.iter().map(|(_, at_store)| *at_store).min().unwrap();
    let hi = fixed.iter().map(|(left, _)| *left).max().unwrap();
    assert!(
        lo >= 6_000 && hi <= 10_000,
        "PTTLs {lo}..={hi} outside [6s, 10s]"
    );
}

static SHORT_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "short", ttl = "2s", cache = cache)]
async fn short_lived(cache: &Cache) -> Result<u32, String> {
    Ok(SHORT_LOADS.fetch_add(1, Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_runs_again_after_the_ttl() {
    let server = RedisServer::start();
    let cache = server.cache("expiry").await;
    let stored = std::time::Instant::now();
    assert_eq!(short_lived(&cache).await, Ok(0));
    let second = short_lived(&cache).await;
    if stored.elapsed() < Duration::from_secs(2) {
        assert_eq!(second, Ok(0), "cached within the ttl");
    }
    // Redis expires the entry; the next call loads again.
    let conn = server.conn().await;
    let key = cache.redis_key(&Key::raw("short"));
    assert!(
        cached_redis_tests::eventually(Duration::from_secs(5), || async {
            pttl(&mut conn.clone(), &key).await == -2
        })
        .await
    );
    let loads_before = SHORT_LOADS.load(Ordering::SeqCst);
    assert_eq!(
        short_lived(&cache).await,
        Ok(loads_before),
        "reloaded after the ttl"
    );
    assert_eq!(SHORT_LOADS.load(Ordering::SeqCst), loads_before + 1);
}
