//! Adversarial tests of `fail_safe` (caadc62): an entry past its TTL (and past `stale`), within
//! `fail_safe`, is loaded as on a miss and answers in place of the load's `Err`; the key then
//! backs off in its process for a second.
//!
//! Five tests (marked "Found") failed on caadc62 and pass since the fixes; each doc comment
//! says which documented guarantee they broke and why. The others held. Entries are aged by shortening their Redis TTL and moving their soft expiry back (`stale::expire_in`),
//! races are held open with gates, held reads and the stats counters, never with sleeps (the
//! one wait is for the one-second back-off itself to end, polled and bounded).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, Policy, redis_cached};
use cached_redis_tests::{Gate, HeldDb, RedisServer, config_set, eventually, pttl, stale};

const TTL: Duration = Duration::from_secs(60);
const FAIL_SAFE: Duration = Duration::from_secs(60);

fn policy(name: &'static str) -> Policy {
    Policy::new(name, TTL)
        .unwrap()
        .with_fail_safe(FAIL_SAFE)
        .unwrap()
}

/// Shortens the Redis TTL of `key` to `left`: for an entry kept `kept` past its TTL, it is then
/// `kept - left` past its TTL.
async fn expire_in(server: &RedisServer, cache: &Cache, key: &Key, left: Duration) {
    let mut conn = server.conn().await;
    let left = left.as_millis() as u64;
    let moved = stale::expire_in(&mut conn, &cache.redis_key(key), left).await;
    assert!(moved, "the entry exists");
    // In the near pass, the cache's copy goes with Redis's message for the rewrite.
    cached_redis_tests::near_caught_up(cache).await;
}

/// Ages the entry of `key` (of a policy kept `FAIL_SAFE` past its TTL) 30 s past its TTL.
async fn expire(server: &RedisServer, cache: &Cache, key: &Key) {
    expire_in(server, cache, key, FAIL_SAFE / 2).await;
}

/// Waits (bounded) until `cache` counts `n` callers that joined a load in this process.
async fn until_coalesced(cache: &Cache, n: u64) {
    let joined = eventually(Duration::from_secs(20), || async {
        cache.stats().coalesced >= n
    })
    .await;
    assert!(joined, "{} of {n} callers joined", cache.stats().coalesced);
}

/// A loader that counts its runs, waits at `gate`, then fails.
fn failing_at_gate(
    loads: &Arc<AtomicU32>,
    gate: &Gate,
) -> impl Future<Output = Result<String, String>> + Send + 'static {
    let (loads, gate) = (loads.clone(), gate.clone());
    async move {
        loads.fetch_add(1, Ordering::SeqCst);
        gate.passed().await;
        Err("the database is unavailable".to_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Functions with `cache_if`.

#[redis_cached(key = "cif:<id>", ttl = "60s", fail_safe = "60s", cache = cache, skip = "db", cache_if = |v: &u64| *v > 0)]
async fn conditional(cache: &Cache, db: &HeldDb, id: u64) -> Result<u64, String> {
    db.read().await.map(|v| v * 100 + id)
}

/// Found: failed on caadc62, passes since the fix.
/// Guarantee attacked (attribute guide, `fail_safe`): "A call that finds an entry past its
/// TTL ... loads as on a miss; if the load returns `Err`, it is answered with the entry
/// instead". `cache_if` is documented as an ordinary option beside it, and the attribute
/// accepts both.
///
/// Fails: `cache_if` wraps the result in `Conditional`, which does not forward
/// `Cacheable::is_failure` (the default says `false`), so `Cache::expired` takes the failed
/// load for a success and returns its `Err` to the caller, with the entry in Redis. No
/// back-off starts either: every call loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_if_function_is_answered_by_the_expired_entry() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fs-cif").await;
    let db = HeldDb::new(1);
    assert_eq!(conditional(&cache, &db, 7).await, Ok(107));
    cache.settle().await;
    expire(&server, &cache, &conditional_key(7)).await;
    db.fail(true);
    let answered = conditional(&cache, &db, 7).await;
    assert_eq!(
        answered,
        Ok(107),
        "an expired entry within fail_safe, a failed load: fail_safe_served {}",
        cache.stats().fail_safe_served
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Concurrent callers of a failing expired key.

/// Found: failed on caadc62, passes since the fix.
/// Guarantee attacked (guarantees item 10 and the attribute guide): "the key is then not
/// loaded again in that process for a second ... so a failing database is not asked by every
/// caller".
///
/// 100 concurrent `Cache::fetch` callers of an expired key whose load fails: one leads, 99
/// join its load. Fails: the leader's error cannot be shared with `Cache::fetch` joiners (no
/// `Failures`), so each is told `LoadYourself` and runs the loader (`Cache::load_alone`): 100
/// loads of the failing database in one process, exactly the storm the back-off is for; the
/// back-off only stops callers that arrive after it started. (The same holds for attribute
/// functions whose error is not `Clone`, such as `sqlx::Error`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_of_a_failing_expired_key_load_once() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fs-storm").await;
    let (key, policy) = (Key::raw("storm"), policy("storm"));
    let first = cache
        .fetch(&key, &policy, async { Ok::<_, String>("v0".to_owned()) })
        .await;
    assert_eq!(first.as_deref(), Ok("v0"));
    cache.settle().await;
    expire(&server, &cache, &key).await;
    let (loads, gate) = (Arc::new(AtomicU32::new(0)), Gate::new());
    let call = |cache: &Cache| {
        let (cache, key, loader) = (cache.clone(), key.clone(), failing_at_gate(&loads, &gate));
        tokio::spawn(async move { cache.fetch(&key, &policy, loader).await })
    };
    let leader = call(&cache);
    let loading = eventually(Duration::from_secs(20), || async {
        loads.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(loading, "the leader loads");
    let joiners: Vec<_> = (0..99).map(|_| call(&cache)).collect();
    until_coalesced(&cache, 99).await;
    gate.open();
    let mut answers = vec![leader.await.unwrap()];
    for joiner in joiners {
        answers.push(joiner.await.unwrap());
    }
    let old = answers.iter().filter(|a| a.as_deref() == Ok("v0")).count();
    assert_eq!(old, 100, "every caller is answered with the entry");
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "loads of the failing database by 100 callers in one process"
    );
}

static SHARED_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "shared:<id>", ttl = "60s", fail_safe = "60s", cache = cache, skip = "gate")]
async fn shared_error(cache: &Cache, gate: &Gate, id: u32) -> Result<String, String> {
    let n = SHARED_LOADS.fetch_add(1, Ordering::SeqCst);
    if n == 0 {
        return Ok(format!("v{id}"));
    }
    gate.passed().await;
    Err("the database is unavailable".to_owned())
}

/// Held: with the attribute and a `Clone` error, the 99 joiners take a clone of the leader's
/// error, and each is answered with the entry: one load for 100 callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_error_makes_one_load_for_a_hundred_callers() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fs-shared").await;
    let gate = Gate::new();
    assert_eq!(shared_error(&cache, &gate, 1).await.as_deref(), Ok("v1"));
    cache.settle().await;
    expire(&server, &cache, &shared_error_key(1)).await;
    let call = |cache: &Cache| {
        let (cache, gate) = (cache.clone(), gate.clone());
        tokio::spawn(async move { shared_error(&cache, &gate, 1).await })
    };
    let leader = call(&cache);
    let loading = eventually(Duration::from_secs(20), || async {
        SHARED_LOADS.load(Ordering::SeqCst) == 2
    })
    .await;
    assert!(loading, "the leader loads");
    let joiners: Vec<_> = (0..99).map(|_| call(&cache)).collect();
    until_coalesced(&cache, 99).await;
    gate.open();
    assert_eq!(leader.await.unwrap().as_deref(), Ok("v1"));
    for joiner in joiners {
        assert_eq!(joiner.await.unwrap().as_deref(), Ok("v1"));
    }
    assert_eq!(SHARED_LOADS.load(Ordering::SeqCst), 2, "one failed load");
    assert_eq!(cache.stats().fail_safe_served, 100, "{:?}", cache.stats());
}

// ---------------------------------------------------------------------------------------------
// 3. A joiner whose leader went away.

/// Found: failed on caadc62, passes since the fix.
/// Guarantee attacked (guarantees item 10): "an entry past its TTL (and past `stale`) is
/// loaded as on a miss and answers in place of the load's `Err`", and item 9: a cancelled
/// leader's "local joiners take over".
///
/// The leader of an expired key's load is cancelled while its (healthy) database read is held;
/// a caller that joined it is told to read again. Fails: `Cache::miss` treats what the reread
/// finds, a `Read::Due` (the same expired entry, still in Redis for `fail_safe`), as a hit, so
/// the joiner is answered with the expired entry as a plain `hit`, without loading, although
/// the database answers and holds a newer row. No load failed: `fail_safe` has nothing to
/// answer for. (The same reread follows a load past `max_load`, and a joiner that arrived
/// after the load began.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_of_a_cancelled_load_loads_rather_than_take_the_expired_entry() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fs-cancel").await;
    let (key, policy) = (Key::raw("cancel"), policy("cancel"));
    let db = Arc::new(HeldDb::new(1));
    assert_eq!(cache.fetch(&key, &policy, db.read()).await, Ok(1));
    cache.settle().await;
    expire(&server, &cache, &key).await;
    db.set_version(2);
    let held = db.hold_next_read();
    let call = || {
        let (cache, key, db) = (cache.clone(), key.clone(), db.clone());
        tokio::spawn(async move { cache.fetch(&key, &policy, async { db.read().await }).await })
    };
    let leader = call();
    held.await;
    let joiner = call();
    until_coalesced(&cache, 1).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    let answered = joiner.await.unwrap();
    let stats = cache.stats();
    assert_eq!(
        answered,
        Ok(2),
        "the joiner of a cancelled load, the database healthy (reads {}, hits {}, loads {})",
        db.reads(),
        stats.hits,
        stats.loads
    );
}

// ---------------------------------------------------------------------------------------------
// 4. `stale` longer than `fail_safe`.

/// Found: failed on caadc62, passes since the fix.
/// Guarantee attacked (attribute guide, `fail_safe`): "Past `fail_safe`, or with Redis
/// unreachable, the error reaches the caller."
///
/// `stale = 1h`, `fail_safe = 1s`: the entry below is 30 minutes past its TTL, within `stale`
/// (Redis keeps it for the longer of the two), far past `fail_safe`. Its refresh fails.
/// Fails: `Cache::refreshed` answers any failed `stale` refresh with the entry whenever the
/// policy has a `fail_safe`, without asking how far past its TTL the entry is, so the caller
/// gets a value 30 minutes past its TTL in place of the error, with `fail_safe` one second
/// (and the key backs off). Guarantees item 10 says "a stale refresh whose load fails answers
/// with the entry too": the two pages disagree for this case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stale_refresh_past_fail_safe_returns_the_error() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fs-long-stale").await;
    let key = Key::raw("long-stale");
    let hour = Duration::from_secs(3600);
    let policy = Policy::new("long-stale", TTL)
        .unwrap()
        .with_stale(hour)
        .unwrap()
        .with_fail_safe(Duration::from_secs(1))
        .unwrap();
    let db = HeldDb::new(1);
    assert_eq!(cache.fetch(&key, &policy, db.read()).await, Ok(1));
    cache.settle().await;
    // 30 minutes past its TTL.
    expire_in(&server, &cache, &key, hour / 2).await;
    db.fail(true);
    let answered = cache.fetch(&key, &policy, db.read()).await;
    assert!(
        answered.is_err(),
        "an entry 30 min past its TTL, fail_safe 1 s, a failed load: answered {answered:?} \
         (fail_safe_served {})",
        cache.stats().fail_safe_served
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A refused PTTL with `fail_safe` longer than `stale`.

static ACL_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "acl:<id>", ttl = "60s", stale = "10s", fail_safe = "1h", cache = cache, skip = "gate")]
async fn acl_row(cache: &Cache, gate: &Gate, id: u32) -> Result<u32, String> {
    let n = ACL_LOADS.fetch_add(1, Ordering::SeqCst);
    if n > 0 {
        gate.passed().await;
    }
    Ok(id * 100 + n)
}

/// Found: failed on caadc62, passes since the fix.
/// Guarantee attacked (attribute guide, `stale`, and guarantees item 10): with `stale`, "a
/// call that finds an entry past its TTL is answered with it at once, as `stale`", within
/// `stale`; past `stale`, within `fail_safe`, it "loads as on a miss". And "where `PTTL` is
/// refused (an ACL without it), an entry's age is read from its load time instead".
///
/// With PTTL refused, `hit_due` makes the entry's PTTL `left_ms + kept_ms`, `left_ms`
/// saturating at 0 once the TTL is over: every entry past its TTL then reads as exactly at
/// its TTL (`past = 0`), so within `stale` whatever its age. Before `fail_safe`, Redis kept an
/// entry at most `stale` past its TTL, so that was harmless; now it keeps it the longer of the
/// two (1 h here). Fails: an entry 30 minutes past its TTL (by its load time), `stale` 10 s,
/// is served as `stale` to a caller while another refreshes it, with the database healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pttl_refused_an_entry_past_stale_is_not_served_stale() {
    let server = RedisServer::start_with(&[
        "--user", "app", "on", ">pw", "~*", "&*", "+@all", "-pttl", "--user", "default", "off",
    ]);
    let url = format!("redis://app:pw@127.0.0.1:{}", server.port());
    let cache = Cache::builder(&url)
        .namespace("adv-fs-acl")
        .op_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let gate = Gate::new();
    assert_eq!(acl_row(&cache, &gate, 1).await, Ok(100));
    cache.settle().await;
    // Loaded a TTL and 30 minutes ago, by its load time; Redis keeps it half an hour more.
    let redis_key = cache.redis_key(&acl_row_key(1));
    cached_redis_tests::stale::age_by_load_time(
        &mut conn,
        &redis_key,
        TTL + Duration::from_millis(1_800_000),
        1_800_000,
    )
    .await;
    // One caller loads (held at the gate); another comes meanwhile.
    let first = {
        let (cache, gate) = (cache.clone(), gate.clone());
        tokio::spawn(async move { acl_row(&cache, &gate, 1).await })
    };
    let loading = eventually(Duration::from_secs(20), || async {
        ACL_LOADS.load(Ordering::SeqCst) == 2
    })
    .await;
    assert!(loading, "the first caller loads");
    let second = {
        let (cache, gate) = (cache.clone(), gate.clone());
        tokio::spawn(async move { acl_row(&cache, &gate, 1).await })
    };
    // Past `stale`, the second caller joins the load and waits for it; served stale, it is
    // done at once.
    let joined_or_done = eventually(Duration::from_secs(20), || async {
        cache.stats().coalesced >= 1 || second.is_finished()
    })
    .await;
    assert!(joined_or_done);
    gate.open();
    assert_eq!(first.await.unwrap(), Ok(101));
    let second = second.await.unwrap();
    assert_eq!(
        second,
        Ok(101),
        "an entry 30 min past its TTL (stale 10 s), the database healthy (stale_served {})",
        cache.stats().stale_served
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Writes during a back-off.

#[redis_cached(key = "row:<id>", ttl = "60s", fail_safe = "60s", cache = cache, skip = "db")]
async fn row(cache: &Cache, db: &HeldDb, id: u64) -> Result<u64, String> {
    db.read().await.map(|v| v * 100 + id)
}

/// Backs off `row(id)` in `a`: its entry (`v1`) expired, its load failing.
async fn backed_off(server: &RedisServer, a: &Cache, db: &HeldDb, id: u64) {
    db.fail(false);
    assert_eq!(row(a, db, id).await, Ok(100 + id));
    a.settle().await;
    expire(server, a, &row_key(id)).await;
    db.fail(true);
    assert_eq!(row(a, db, id).await, Ok(100 + id), "the fail-safe answer");
    let reads = db.reads();
    assert_eq!(row(a, db, id).await, Ok(100 + id));
    assert_eq!(db.reads(), reads, "backed off");
}

/// Held: during a back-off, an invalidation, a `clear()` or an `update_*` made by another
/// process (a second `Cache` on the same Redis) is seen by the next call of the backed-off
/// process: the back-off answers with what this call's GET read, never with what a call
/// before the write read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_by_another_process_end_the_fallback_during_a_back_off() {
    let server = RedisServer::start();
    let (a, b) = (
        server.cache("adv-fs-writes").await,
        server.cache("adv-fs-writes").await,
    );
    let db = HeldDb::new(1);
    // An invalidation: the entry is gone, the failed load's error reaches the caller.
    backed_off(&server, &a, &db, 1).await;
    assert!(invalidate_row(&b, 1).await.unwrap());
    assert!(
        row(&a, &db, 1).await.is_err(),
        "invalidated: nothing to answer with"
    );
    // `clear()`: the same.
    backed_off(&server, &a, &db, 2).await;
    b.clear().await.unwrap();
    assert!(
        row(&a, &db, 2).await.is_err(),
        "cleared: nothing to answer with"
    );
    // The same process invalidates during its own back-off.
    backed_off(&server, &a, &db, 3).await;
    assert!(invalidate_row(&a, 3).await.unwrap());
    assert!(row(&a, &db, 3).await.is_err(), "invalidated here");
    // An update keeps the entry's TTL (expired): the back-off answers with the update.
    backed_off(&server, &a, &db, 4).await;
    assert!(update_row(&b, 4, |v| *v = 999).await.unwrap());
    assert_eq!(row(&a, &db, 4).await, Ok(999), "the updated value");
    // Another process stores a new value: a fresh hit, whatever the back-off.
    backed_off(&server, &a, &db, 5).await;
    assert!(invalidate_row(&b, 5).await.unwrap());
    db.fail(false);
    db.set_version(2);
    assert_eq!(row(&b, &db, 5).await, Ok(205));
    b.settle().await;
    db.fail(true);
    assert_eq!(row(&a, &db, 5).await, Ok(205), "the new value");
}

/// Held: an invalidation in this process while the failing load of the expired entry runs:
/// callers that begin after it returned never get the entry it removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_the_failing_load_removes_the_fallback() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fs-inv-load").await;
    let (key, policy) = (Key::raw("inv-load"), policy("inv-load"));
    let first = cache
        .fetch(&key, &policy, async { Ok::<_, String>("v0".to_owned()) })
        .await;
    assert_eq!(first.as_deref(), Ok("v0"));
    cache.settle().await;
    expire(&server, &cache, &key).await;
    let (loads, gate) = (Arc::new(AtomicU32::new(0)), Gate::new());
    let leader = {
        let (cache, key, loader) = (cache.clone(), key.clone(), failing_at_gate(&loads, &gate));
        tokio::spawn(async move { cache.fetch(&key, &policy, loader).await })
    };
    let loading = eventually(Duration::from_secs(20), || async {
        loads.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(loading);
    assert!(cache.invalidate(&key).await.unwrap());
    // A caller after the invalidation: nothing to fall back on.
    let after = cache
        .fetch(&key, &policy, async { Err::<String, _>("down".to_owned()) })
        .await;
    assert!(after.is_err(), "after the invalidation: {after:?}");
    gate.open();
    // The leader's call overlapped the invalidation: either answer is linearisable.
    let _ = leader.await.unwrap();
    // Its fail-safe answer started a back-off; a call now finds no entry, and loads.
    let later = cache
        .fetch(&key, &policy, async { Err::<String, _>("down".to_owned()) })
        .await;
    assert!(later.is_err(), "later: {later:?}");
}

// ---------------------------------------------------------------------------------------------
// 7. The back-off's reach and length.

/// Held: the back-off holds one key of one cache for about a second. Another key of the same
/// function, and the same key on another cache (namespace), load meanwhile; once the
/// database is back, the key is loaded again within the second (plus polling).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_back_off_holds_one_key_for_a_second() {
    let server = RedisServer::start();
    let (a, other) = (
        server.cache("adv-fs-reach").await,
        server.cache("adv-fs-reach-2").await,
    );
    let (db, db2) = (HeldDb::new(1), HeldDb::new(1));
    assert_eq!(row(&a, &db2, 2).await, Ok(102));
    assert_eq!(row(&other, &db2, 1).await, Ok(101));
    a.settle().await;
    other.settle().await;
    expire(&server, &a, &row_key(2)).await;
    expire(&server, &other, &row_key(1)).await;
    backed_off(&server, &a, &db, 1).await;
    let started = Instant::now();
    db2.set_version(3);
    assert_eq!(row(&a, &db2, 2).await, Ok(302), "another key loads");
    assert_eq!(row(&other, &db2, 1).await, Ok(301), "another cache loads");
    // Still backed off (well within the second): no load.
    let reads = db.reads();
    db.fail(false);
    db.set_version(4);
    if started.elapsed() < Duration::from_millis(500) {
        assert_eq!(row(&a, &db, 1).await, Ok(101));
        assert_eq!(db.reads(), reads, "backed off");
    }
    // The database is back: loaded again once the second is over.
    let recovered = eventually(Duration::from_secs(3), || async {
        row(&a, &db, 1).await == Ok(401)
    })
    .await;
    let took = started.elapsed();
    assert!(recovered, "the key is loaded again after the back-off");
    assert!(took < Duration::from_millis(2_000), "{took:?}");
}

// ---------------------------------------------------------------------------------------------
// 8. What the fallback answers with.

/// Held: a load that succeeds is its caller's answer, even one that caches nothing
/// (`Ok(None)` without `none_ttl`); the entry answers only for an `Err`. With `none_ttl`, a
/// cached `Ok(None)` is an entry like another, and answers for a failed load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_load_is_never_replaced_by_the_expired_entry() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fs-none").await;
    let key = Key::raw("opt");
    let policy = policy("opt");
    let some = cache
        .fetch(&key, &policy, async { Ok::<_, String>(Some(5u64)) })
        .await;
    assert_eq!(some, Ok(Some(5)));
    cache.settle().await;
    expire(&server, &cache, &key).await;
    let none = cache
        .fetch(&key, &policy, async { Ok::<Option<u64>, String>(None) })
        .await;
    assert_eq!(none, Ok(None), "the load's Ok(None), not the entry");
    // With none_ttl: the None is cached, kept fail_safe past its none_ttl, and answers.
    let key = Key::raw("none-ttl");
    let policy = Policy::new("none-ttl", TTL)
        .unwrap()
        .with_none_ttl(Duration::from_secs(5))
        .unwrap()
        .with_fail_safe(FAIL_SAFE)
        .unwrap();
    let none = cache
        .fetch(&key, &policy, async { Ok::<Option<u64>, String>(None) })
        .await;
    assert_eq!(none, Ok(None));
    cache.settle().await;
    let mut conn = server.conn().await;
    let kept = pttl(&mut conn, &cache.redis_key(&key)).await;
    assert!(
        kept > 60_000 && kept <= 65_000,
        "none_ttl + fail_safe: {kept}"
    );
    expire(&server, &cache, &key).await;
    let failed = cache
        .fetch(&key, &policy, async {
            Err::<Option<u64>, _>("down".to_owned())
        })
        .await;
    assert_eq!(failed, Ok(None), "the cached None answers");
    assert_eq!(cache.stats().fail_safe_served, 1);
}

/// Held: an entry of another key is never the answer, nor one past `fail_safe` (gone from
/// Redis): keys that differ only past the readable part of a hashed long key are distinct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_is_the_keys_own_entry() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fs-own").await;
    let policy = policy("own");
    let long = "x".repeat(400);
    let (k1, k2) = (Key::raw(format!("{long}1")), Key::raw(format!("{long}2")));
    for (key, v) in [(&k1, 1u64), (&k2, 2)] {
        let stored = cache
            .fetch(key, &policy, async move { Ok::<_, String>(v) })
            .await;
        assert_eq!(stored, Ok(v));
    }
    cache.settle().await;
    expire(&server, &cache, &k1).await;
    expire(&server, &cache, &k2).await;
    let down = || async { Err::<u64, _>("down".to_owned()) };
    assert_eq!(cache.fetch(&k1, &policy, down()).await, Ok(1));
    assert_eq!(cache.fetch(&k2, &policy, down()).await, Ok(2));
    // k1 past fail_safe (gone from Redis), k2 backed off.
    let mut conn = server.conn().await;
    let _: u64 = redis::cmd("DEL")
        .arg(cache.redis_key(&k1))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(cache.fetch(&k1, &policy, down()).await.is_err());
    assert_eq!(cache.fetch(&k2, &policy, down()).await, Ok(2));
}

// ---------------------------------------------------------------------------------------------
// 9. Redis refusing writes, or down, while the entry is expired.

/// Held: with Redis refusing writes (`NOREPLICAS`), an expired entry's load runs without a
/// lease; a failure is answered with the entry, a success with its value (not stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_refused_while_the_entry_is_expired() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fs-refused").await;
    let (key, policy, db) = (Key::raw("refused"), policy("refused"), HeldDb::new(1));
    assert_eq!(cache.fetch(&key, &policy, db.read()).await, Ok(1));
    cache.settle().await;
    expire(&server, &cache, &key).await;
    let mut admin = server.conn().await;
    config_set(&mut admin, "min-replicas-to-write", "1").await;
    db.fail(true);
    assert_eq!(cache.fetch(&key, &policy, db.read()).await, Ok(1));
    assert!(cache.stats().writes_refused >= 1, "{:?}", cache.stats());
    // A second key, healthy: its load answers.
    let key2 = Key::raw("refused-2");
    config_set(&mut admin, "min-replicas-to-write", "0").await;
    let db2 = HeldDb::new(1);
    assert_eq!(cache.fetch(&key2, &policy, db2.read()).await, Ok(1));
    cache.settle().await;
    expire(&server, &cache, &key2).await;
    config_set(&mut admin, "min-replicas-to-write", "1").await;
    db2.set_version(2);
    assert_eq!(cache.fetch(&key2, &policy, db2.read()).await, Ok(2));
    config_set(&mut admin, "min-replicas-to-write", "0").await;
}

/// Held (documented): with Redis down, the expired entry cannot be read, and the load's error
/// reaches the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_lets_the_error_through() {
    let mut server = RedisServer::start();
    let cache = server
        .cache_builder("adv-fs-down")
        .op_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let (key, policy, db) = (Key::raw("down"), policy("down"), HeldDb::new(1));
    assert_eq!(cache.fetch(&key, &policy, db.read()).await, Ok(1));
    cache.settle().await;
    expire(&server, &cache, &key).await;
    server.kill();
    db.fail(true);
    assert!(cache.fetch(&key, &policy, db.read()).await.is_err());
    assert_eq!(cache.stats().fail_safe_served, 0);
}

// ---------------------------------------------------------------------------------------------
// 10. Return types through aliases (each compiles only if the check sees a `Result`), and
// `refresh = "early"` beside `fail_safe`.

type R<T> = Result<T, String>;

#[redis_cached(key = "alias:<id>", ttl = "60s", fail_safe = "60s", cache = cache, skip = "db")]
async fn through_alias(cache: &Cache, db: &HeldDb, id: u64) -> R<u64> {
    db.read().await.map(|v| v * 100 + id)
}

#[redis_cached(key = "io:<id>", ttl = "60s", fail_safe = "1d", cache = cache, skip = "db")]
async fn through_io_result(cache: &Cache, db: &HeldDb, id: u64) -> std::io::Result<u64> {
    db.read().await.map_err(std::io::Error::other)
}

#[redis_cached(key = "early:<id>", ttl = "60s", refresh = "early", beta = 1000, fail_safe = "60s", cache = cache, skip = "db")]
async fn early(cache: &Cache, db: &HeldDb, id: u64) -> Result<u64, String> {
    db.read().await.map(|v| v * 100 + id)
}

/// Held: aliases of `Result` (a local `type R<T>`, `std::io::Result`, whose error is not
/// `Clone`) compile with `fail_safe` and answer with the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_of_result_take_fail_safe() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fs-alias").await;
    let db = HeldDb::new(1);
    assert_eq!(through_alias(&cache, &db, 1).await, Ok(101));
    assert_eq!(through_io_result(&cache, &db, 1).await.unwrap(), 1);
    cache.settle().await;
    expire(&server, &cache, &through_alias_key(1)).await;
    // fail_safe = "1d": kept a day past the TTL; 30 s past it.
    let day = Duration::from_secs(24 * 3600);
    expire_in(&server, &cache, &through_io_result_key(1), day / 2).await;
    db.fail(true);
    assert_eq!(through_alias(&cache, &db, 1).await, Ok(101));
    assert_eq!(through_io_result(&cache, &db, 1).await.unwrap(), 1);
}

/// Held: with `refresh = "early"`, an early refresh that fails answers with the (fresh)
/// entry; past the TTL, within `fail_safe`, the failed load is answered by the entry, and
/// the key backs off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refresh_beside_fail_safe() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fs-early").await;
    let db = HeldDb::new(1);
    assert_eq!(early(&cache, &db, 1).await, Ok(101));
    cache.settle().await;
    db.fail(true);
    // 1 s before the TTL ends, its load recorded as 10 s long (beta 1000 draws a refresh): the
    // refresh fails, the entry answers.
    let redis_key = cache.redis_key(&early_key(1));
    let mut conn = server.conn().await;
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&redis_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut envelope: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    envelope["load_ms"] = 10_000.into();
    let _: () = redis::cmd("SET")
        .arg(&redis_key)
        .arg(serde_json::to_vec(&envelope).unwrap())
        .arg("KEEPTTL")
        .query_async(&mut conn)
        .await
        .unwrap();
    let left = (FAIL_SAFE + Duration::from_secs(1)).as_millis() as u64;
    assert!(stale::expire_in(&mut conn, &redis_key, left).await);
    cached_redis_tests::near_caught_up(&cache).await;
    let reads = db.reads();
    assert_eq!(early(&cache, &db, 1).await, Ok(101));
    assert!(db.reads() > reads, "an early refresh was drawn");
    assert_eq!(cache.stats().fail_safe_served, 0, "still fresh");
    expire(&server, &cache, &early_key(1)).await;
    assert_eq!(early(&cache, &db, 1).await, Ok(101));
    assert_eq!(cache.stats().fail_safe_served, 1);
    let reads = db.reads();
    assert_eq!(early(&cache, &db, 1).await, Ok(101));
    assert_eq!(db.reads(), reads, "backed off");
}
