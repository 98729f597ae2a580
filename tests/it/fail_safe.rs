//! `fail_safe`: an entry past its TTL (within `fail_safe`) answers in place of a failed load's
//! error, the key is then not loaded again in that process for a moment, and an entry past
//! `fail_safe` (gone from Redis) lets the error through. Entries are aged by shortening their
//! Redis TTL and moving their soft expiry back (`stale::expire_in`), not by waiting.

use std::time::Duration;

use cached_redis::{Cache, Key, Policy, redis_cached};
use cached_redis_tests::{HeldDb, RedisServer, stale};

const TTL: Duration = Duration::from_secs(60);
const FAIL_SAFE: Duration = Duration::from_secs(60);

fn policy(name: &'static str) -> Policy {
    Policy::new(name, TTL)
        .unwrap()
        .with_fail_safe(FAIL_SAFE)
        .unwrap()
}

/// Ages the entry of `key` past its TTL by `past` (within `fail_safe` if `past` is shorter).
async fn age(server: &RedisServer, cache: &Cache, key: &Key, past: Duration) {
    let mut conn = server.conn().await;
    let left = (FAIL_SAFE - past).as_millis() as u64;
    assert!(stale::expire_in(&mut conn, &cache.redis_key(key), left).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_is_answered_with_the_expired_entry_and_the_key_backs_off() {
    let server = RedisServer::start();
    let (a, b) = (
        server.cache("fail-safe").await,
        server.cache("fail-safe").await,
    );
    let (key, policy, db) = (Key::raw("catalog"), policy("catalog"), HeldDb::new(1));
    assert_eq!(a.fetch(&key, &policy, db.read()).await, Ok(1));
    a.settle().await;
    let redis_key = a.redis_key(&key);
    let mut conn = server.conn().await;
    let kept: i64 = redis::cmd("PTTL")
        .arg(&redis_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        kept > 61_000,
        "Redis keeps the entry for ttl + fail_safe: {kept} ms"
    );
    age(&server, &a, &key, Duration::from_secs(30)).await;
    db.fail(true);
    assert_eq!(
        a.fetch(&key, &policy, db.read()).await,
        Ok(1),
        "the expired entry"
    );
    assert_eq!(db.reads(), 2, "the load was tried");
    // Backed off: the next calls in this process do not ask the database.
    for _ in 0..20 {
        assert_eq!(a.fetch(&key, &policy, db.read()).await, Ok(1));
    }
    assert_eq!(db.reads(), 2, "no load while the key is backed off");
    assert_eq!(a.stats().fail_safe_served, 21, "{:?}", a.stats());
    // The database is back: another process (not backed off) loads, and stores.
    db.fail(false);
    db.set_version(2);
    assert_eq!(b.fetch(&key, &policy, db.read()).await, Ok(2));
    b.settle().await;
    assert_eq!(
        a.fetch(&key, &policy, db.read()).await,
        Ok(2),
        "fresh again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_fail_safe_the_error_reaches_the_caller() {
    let server = RedisServer::start();
    let cache = server.cache("fail-safe-gone").await;
    let (key, policy, db) = (Key::raw("gone"), policy("gone"), HeldDb::new(1));
    assert_eq!(cache.fetch(&key, &policy, db.read()).await, Ok(1));
    cache.settle().await;
    // Past `fail_safe`, Redis no longer holds the entry.
    let mut conn = server.conn().await;
    let _: u64 = redis::cmd("DEL")
        .arg(cache.redis_key(&key))
        .query_async(&mut conn)
        .await
        .unwrap();
    db.fail(true);
    assert!(cache.fetch(&key, &policy, db.read()).await.is_err());
    assert_eq!(cache.stats().fail_safe_served, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_past_its_ttl_loads_as_a_miss_when_the_load_succeeds() {
    let server = RedisServer::start();
    let cache = server.cache("fail-safe-ok").await;
    let (key, policy, db) = (Key::raw("ok"), policy("ok"), HeldDb::new(1));
    assert_eq!(cache.fetch(&key, &policy, db.read()).await, Ok(1));
    cache.settle().await;
    age(&server, &cache, &key, Duration::from_secs(1)).await;
    db.set_version(2);
    assert_eq!(
        cache.fetch(&key, &policy, db.read()).await,
        Ok(2),
        "not the expired entry"
    );
    assert_eq!(cache.stats().fail_safe_served, 0);
}

/// The attribute's form, with `stale` too: within `stale` the entry is served while one caller
/// refreshes; past it, within `fail_safe`, it answers for the failed load.
#[redis_cached(key = "price:<id>", ttl = "60s", stale = "10s", fail_safe = "60s", cache = cache, skip = "db")]
async fn price(cache: &Cache, db: &HeldDb, id: u64) -> Result<u64, String> {
    db.read().await.map(|v| v * 100 + id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stale_and_fail_safe_each_window_answers_as_its_option_says() {
    let server = RedisServer::start();
    let cache = server.cache("fail-safe-attr").await;
    let db = HeldDb::new(1);
    assert_eq!(price(&cache, &db, 7).await, Ok(107));
    cache.settle().await;
    let key = price_key(7);
    db.fail(true);
    // 5 s past the TTL: stale; its refresh fails and, within fail_safe, the entry answers.
    age(&server, &cache, &key, Duration::from_secs(5)).await;
    assert_eq!(price(&cache, &db, 7).await, Ok(107));
    // 30 s past: past stale, within fail_safe.
    age(&server, &cache, &key, Duration::from_secs(30)).await;
    assert_eq!(price(&cache, &db, 7).await, Ok(107));
    assert!(cache.stats().fail_safe_served >= 1, "{:?}", cache.stats());
}

#[redis_cached(key = "rate:<id>", ttl = "60s", fail_safe = "60s", back_off = "300ms", cache = cache, skip = "db")]
async fn rate(cache: &Cache, db: &HeldDb, id: u64) -> Result<u64, String> {
    db.read().await.map(|v| v * 100 + id)
}

/// `back_off` sets how long a key is answered by its entry after a failed load: the database
/// is not read again within it, and is read again once it is over (the one wait here is the
/// interval under test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_off_sets_how_long_a_failing_key_is_not_loaded() {
    let server = RedisServer::start();
    let cache = server.cache("fail-safe-back-off").await;
    let db = HeldDb::new(1);
    assert_eq!(rate(&cache, &db, 1).await, Ok(101));
    cache.settle().await;
    age(&server, &cache, &rate_key(1), Duration::from_secs(30)).await;
    db.fail(true);
    // The back-off starts between these two instants.
    let started = std::time::Instant::now();
    assert_eq!(rate(&cache, &db, 1).await, Ok(101), "the expired entry");
    let answered = std::time::Instant::now();
    assert_eq!(db.reads(), 2);
    while started.elapsed() < Duration::from_millis(200) {
        assert_eq!(rate(&cache, &db, 1).await, Ok(101));
    }
    assert_eq!(db.reads(), 2, "backed off");
    let over = Duration::from_millis(350).saturating_sub(answered.elapsed());
    tokio::time::sleep(over).await;
    assert_eq!(rate(&cache, &db, 1).await, Ok(101));
    assert_eq!(
        db.reads(),
        3,
        "loaded again after 300 ms, not after the default second"
    );

    let policy = policy("p").with_back_off(Duration::from_millis(1)).unwrap();
    assert_eq!(policy.back_off(), Duration::from_millis(1));
    assert!(policy.with_back_off(Duration::ZERO).is_err());
    assert!(
        policy
            .with_back_off(Duration::from_secs(2 * 86_400))
            .is_err()
    );
}
