//! Adversarial tests of guarantee 2's newest part: callers that joined a failed load take a
//! clone of its error when the function's error type is `Clone` (`__private/failures.rs`,
//! `read/failures.rs`, `read/lead.rs` `give_up`, `read/fetch.rs` `join`, `memory/read.rs`).
//! Each test is named for what it checks; loaders are held by [`HeldDb`] or a `Notify`, and a
//! joiner is known to have joined by `stats().coalesced`, never by a sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cached_redis::{Cache, redis_cached};
use cached_redis_tests::{HeldDb, RedisServer, assert_no_state_left, eventually};
use tokio::task::JoinHandle;

/// A row that is not there (yet): a cloneable error, the case the feature is for.
#[derive(Debug, Clone, PartialEq)]
struct NotFound(u32);

/// Reads the row; version 0 means "no such row" (`Err(NotFound)`), as `fetch_optional` +
/// `ok_or` would answer before the row is inserted.
#[redis_cached(key = "row:<id>", ttl = "60s", cache = cache, skip = "db")]
async fn row(cache: &Cache, id: u32, db: Arc<HeldDb>) -> Result<u64, NotFound> {
    match db.read().await {
        Ok(0) | Err(_) => Err(NotFound(id)),
        Ok(version) => Ok(version),
    }
}

fn call_row(cache: &Cache, id: u32, db: &Arc<HeldDb>) -> JoinHandle<Result<u64, NotFound>> {
    let (cache, db) = (cache.clone(), db.clone());
    tokio::spawn(async move { row(&cache, id, db).await })
}

/// Waits (bounded) until `n` more callers have joined a load in this process.
async fn until_joined(cache: &Cache, before: u64, n: u64) {
    let joined = eventually(Duration::from_secs(5), || async {
        cache.stats().coalesced - before >= n
    })
    .await;
    assert!(
        joined,
        "the caller joined the load in flight: {:?}",
        cache.stats()
    );
}

/// The race behind guarantee 3, with an error instead of a value: a load reads "no such row",
/// the row is inserted and `invalidate_row` returns, then a new read starts, misses (the entry
/// and the lease are gone) and joins the old load still in flight in this process. The load
/// fails with the `NotFound` it read before the insert. The new read began after the
/// invalidation returned, so it must not get that error (for a value, the revoked write-back
/// makes it read again; for an error nothing checks the lease).
async fn stale_error_after_invalidate(cache: &Cache) {
    let db = Arc::new(HeldDb::new(0));
    let started = db.hold_next_read();
    let first = call_row(cache, 1, &db);
    started.await;
    // The write: the row now exists; then the invalidation, which returns.
    db.set_version(1);
    let _removed = invalidate_row(cache, 1).await.expect("invalidate");
    let before = cache.stats().coalesced;
    let after_write = call_row(cache, 1, &db);
    until_joined(cache, before, 1).await;
    db.release();
    // The first caller's own load overlapped the write: its NotFound is its own to keep.
    assert_eq!(first.await.unwrap(), Err(NotFound(1)));
    assert_eq!(
        after_write.await.unwrap(),
        Ok(1),
        "a read that began after invalidate_row returned got the error of a load that read \
         the database before the write"
    );
    cache.settle().await;
    assert_no_state_left(cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_error_from_before_an_invalidation_reaches_a_read_that_began_after_it() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fail-inv").await;
    stale_error_after_invalidate(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_no_error_from_before_an_invalidation_reaches_a_read_that_began_after_it() {
    let cache = Cache::in_memory(100);
    stale_error_after_invalidate(&cache).await;
}

/// The same race through a Redis refusing writes (`OOM` under `noeviction`): the leader loads
/// without a lease, the invalidation's `DEL` is allowed, and the guarantees page says a caller
/// that "arrived while it ran (it may have seen an invalidation that the load predates) leads
/// the next load". For an error, it takes the old load's `NotFound` instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_refused_no_error_from_before_an_invalidation_reaches_a_read_that_began_after_it() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fail-oom").await;
    let mut admin = server.conn().await;
    cached_redis_tests::config_set(&mut admin, "maxmemory-policy", "noeviction").await;
    cached_redis_tests::config_set(&mut admin, "maxmemory", "1").await;
    stale_error_after_invalidate(&cache).await;
    assert!(cache.stats().writes_refused >= 1, "{:?}", cache.stats());
}

// ---------------------------------------------------------------------------------------------
// Two functions, one key template.
// ---------------------------------------------------------------------------------------------

/// An error two functions share as a type.
#[derive(Debug, Clone, PartialEq)]
struct Missing(&'static str);

/// Counts loads of each function; `name_of`'s waits for `hold` to be released once.
struct Sources {
    names: AtomicU32,
    ages: AtomicU32,
    db: HeldDb,
}

/// A user's name, from a table that does not have this user: `Missing("name")`.
#[redis_cached(key = "user:<id>", ttl = "60s", cache = cache, skip = "src")]
async fn name_of(cache: &Cache, id: u32, src: Arc<Sources>) -> Result<String, Missing> {
    src.names.fetch_add(1, Ordering::SeqCst);
    let _ = src.db.read().await;
    let _ = id;
    Err(Missing("name"))
}

/// A user's age, from another table that has it. Same key template, same error type, another
/// value type: the two functions can never share a value (a `String` does not decode as a
/// `u32`, so a joiner loads for itself), and must not share an error either.
#[redis_cached(key = "user:<id>", ttl = "60s", cache = cache, skip = "src")]
async fn age_of(cache: &Cache, id: u32, src: Arc<Sources>) -> Result<u32, Missing> {
    src.ages.fetch_add(1, Ordering::SeqCst);
    let _ = id;
    Ok(42)
}

/// Same key template again, with an error type of its own.
#[derive(Debug, Clone, PartialEq)]
struct Gone;

#[redis_cached(key = "user:<id>", ttl = "60s", cache = cache, skip = "src")]
async fn score_of(cache: &Cache, id: u32, src: Arc<Sources>) -> Result<u32, Gone> {
    src.ages.fetch_add(1, Ordering::SeqCst);
    let _ = id;
    Ok(7)
}

fn sources() -> Arc<Sources> {
    Arc::new(Sources {
        names: AtomicU32::new(0),
        ages: AtomicU32::new(0),
        db: HeldDb::new(1),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_never_gets_the_error_of_another_function_sharing_its_key() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fail-fn").await;
    let src = sources();
    let started = src.db.hold_next_read();
    let name = {
        let (cache, src) = (cache.clone(), src.clone());
        tokio::spawn(async move { name_of(&cache, 3, src).await })
    };
    started.await;
    let before = cache.stats().coalesced;
    let age = {
        let (cache, src) = (cache.clone(), src.clone());
        tokio::spawn(async move { age_of(&cache, 3, src).await })
    };
    until_joined(&cache, before, 1).await;
    src.db.release();
    assert_eq!(name.await.unwrap(), Err(Missing("name")));
    assert_eq!(
        age.await.unwrap(),
        Ok(42),
        "age_of answered name_of's error without running its own loader (ages loaded: {})",
        src.ages.load(Ordering::SeqCst)
    );
    cache.settle().await;
    assert_no_state_left(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_never_gets_an_error_of_another_type_sharing_its_key() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fail-type").await;
    let src = sources();
    let started = src.db.hold_next_read();
    let name = {
        let (cache, src) = (cache.clone(), src.clone());
        tokio::spawn(async move { name_of(&cache, 4, src).await })
    };
    started.await;
    let before = cache.stats().coalesced;
    let score = {
        let (cache, src) = (cache.clone(), src.clone());
        tokio::spawn(async move { score_of(&cache, 4, src).await })
    };
    until_joined(&cache, before, 1).await;
    src.db.release();
    assert_eq!(name.await.unwrap(), Err(Missing("name")));
    assert_eq!(score.await.unwrap(), Ok(7), "its own loader answered");
    assert_eq!(src.ages.load(Ordering::SeqCst), 1);
    cache.settle().await;
    assert_no_state_left(&cache).await;
}

// ---------------------------------------------------------------------------------------------
// Attacks that held: which functions share, what stats say, a leader cancelled mid-give-up.
// ---------------------------------------------------------------------------------------------

/// Through an alias, as the guarantees page promises for return types.
type DbResult<T> = Result<T, NotFound>;

#[redis_cached(key = "alias:<id>", ttl = "60s", cache = cache, skip = "db")]
async fn via_alias(cache: &Cache, id: u32, db: Arc<HeldDb>) -> DbResult<u64> {
    let _ = db.read().await;
    Err(NotFound(id))
}

/// An error type that is `Clone + Send` but not `Sync`: not shared, each joiner loads.
#[redis_cached(key = "cell:<id>", ttl = "60s", cache = cache, skip = "db")]
async fn not_sync(cache: &Cache, id: u32, db: Arc<HeldDb>) -> Result<u64, std::cell::Cell<u32>> {
    let _ = db.read().await;
    Err(std::cell::Cell::new(id))
}

/// A cloneable error with `cache_if`: documented to keep one load per joiner.
#[redis_cached(key = "cif:<id>", ttl = "60s", cache = cache, skip = "db", cache_if = |v: &u64| *v > 0)]
async fn with_cache_if(cache: &Cache, id: u32, db: Arc<HeldDb>) -> Result<u64, NotFound> {
    let _ = db.read().await;
    Err(NotFound(id))
}

/// A cloneable error, generic: `<E>` is in the key, so each instance has its own entry. Its
/// failures are not shared (the expansion leaves generic return types out).
#[redis_cached(key = "gen:<E>:<id>", ttl = "60s", cache = cache, skip = "db")]
async fn generic_error<E: Clone + Send + Sync + 'static + From<u32>>(
    cache: &Cache,
    id: u32,
    db: Arc<HeldDb>,
) -> Result<u64, E> {
    let _ = db.read().await;
    Err(E::from(id))
}

impl From<u32> for NotFound {
    fn from(id: u32) -> NotFound {
        NotFound(id)
    }
}

/// 1 leader held in its loader, `joiners` joined, then released: (results, loads).
async fn one_failed_load<R, F, Fut>(cache: &Cache, joiners: u64, call: F) -> (Vec<R>, u64)
where
    R: Send + 'static,
    F: Fn(Cache, Arc<HeldDb>) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let db = Arc::new(HeldDb::new(0));
    let started = db.hold_next_read();
    let first = tokio::spawn(call(cache.clone(), db.clone()));
    started.await;
    let before = cache.stats().coalesced;
    let rest: Vec<_> = (0..joiners)
        .map(|_| tokio::spawn(call(cache.clone(), db.clone())))
        .collect();
    until_joined(cache, before, joiners).await;
    db.release();
    let mut results = vec![first.await.unwrap()];
    for caller in rest {
        results.push(caller.await.unwrap());
    }
    cache.settle().await;
    assert_no_state_left(cache).await;
    (results, db.reads())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_shares_one_failed_load_a_generic_error_does_not_and_stats_stay_truthful() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fail-alias").await;
    let (results, loads) =
        one_failed_load(&cache, 5, |c, db| async move { via_alias(&c, 2, db).await }).await;
    assert!(
        results.iter().all(|r| *r == Err(NotFound(2))),
        "{results:?}"
    );
    assert_eq!(loads, 1, "one load for 6 callers");
    let stats = cache.stats();
    assert_eq!(
        (stats.loads, stats.load_errors, stats.coalesced),
        (1, 1, 5),
        "{stats:?}"
    );
    let (results, loads) = one_failed_load(&cache, 5, |c, db| async move {
        generic_error::<NotFound>(&c, 2, db).await
    })
    .await;
    assert!(
        results.iter().all(|r| *r == Err(NotFound(2))),
        "{results:?}"
    );
    // A return type naming the function's generic parameters shares nothing: the sharing's
    // `'static` bound is not weighed by method lookup, so the expansion leaves it out rather
    // than risk an error for an `E` that borrows.
    assert_eq!(loads, 6, "each caller of a generic function loads");
    // Not cached: the next call loads again.
    let (_, loads) =
        one_failed_load(&cache, 0, |c, db| async move { via_alias(&c, 2, db).await }).await;
    assert_eq!(loads, 1);
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.load_errors), (8, 8), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_that_is_not_sync_or_has_cache_if_is_not_shared() {
    let server = RedisServer::start();
    let cache = server.cache("adv-fail-own").await;
    let (results, loads) = one_failed_load(&cache, 3, |c, db| async move {
        not_sync(&c, 5, db).await.map_err(|e| e.get())
    })
    .await;
    assert!(results.iter().all(|r| *r == Err(5)), "{results:?}");
    assert_eq!(loads, 4, "each joiner ran its own loader");
    let (results, loads) =
        one_failed_load(
            &cache,
            3,
            |c, db| async move { with_cache_if(&c, 5, db).await },
        )
        .await;
    assert!(
        results.iter().all(|r| *r == Err(NotFound(5))),
        "{results:?}"
    );
    assert_eq!(loads, 4, "each joiner ran its own loader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_an_alias_shares_one_failed_load_and_a_non_sync_error_does_not() {
    let cache = Cache::in_memory(100);
    let (results, loads) =
        one_failed_load(&cache, 4, |c, db| async move { via_alias(&c, 9, db).await }).await;
    assert!(
        results.iter().all(|r| *r == Err(NotFound(9))),
        "{results:?}"
    );
    assert_eq!(loads, 1);
    let (_, loads) = one_failed_load(&cache, 4, |c, db| async move {
        not_sync(&c, 9, db).await.is_err()
    })
    .await;
    assert_eq!(loads, 5);
}

/// The leader's loader failed and its lease release is on the wire (the reply held at a
/// proxy) when its caller is cancelled: the error was never shared. The joiner must not hang,
/// must get a `NotFound` of its key (from its own load), and nothing may be left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cancelled_between_its_failure_and_sharing_it_leaves_nobody_hanging() {
    let server = RedisServer::start();
    let proxy = cached_redis_tests::Proxy::start(server.port()).await;
    let mut admin = server.conn().await;
    let builder = Cache::builder(&proxy.url())
        .namespace("adv-fail-cancel")
        .op_timeout(Duration::from_secs(5));
    let (cache, writes) = proxy.cache_and_writes(&mut admin, builder).await;
    let db = Arc::new(HeldDb::new(0));
    // One failed load first, so that the release script is loaded on the server: a held
    // NOSCRIPT reply would otherwise hold the leader for op_timeout before it sent the script.
    assert_eq!(row(&cache, 60, db.clone()).await, Err(NotFound(60)));
    let db = Arc::new(HeldDb::new(0));
    let started = db.hold_next_read();
    let leader = call_row(&cache, 6, &db);
    started.await;
    let before = cache.stats().coalesced;
    let joiner = call_row(&cache, 6, &db);
    until_joined(&cache, before, 1).await;
    proxy.hold_replies(writes);
    db.release();
    // The release script has run on the server (the lease is gone); its reply is held.
    let released = eventually(Duration::from_secs(5), || {
        let mut admin = admin.clone();
        async move {
            cached_redis_tests::scan_keys(&mut admin, "adv-fail-cancel:{row*")
                .await
                .is_empty()
        }
    })
    .await;
    assert!(released, "the leader released its lease");
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    proxy.release_replies(writes);
    let answered = tokio::time::timeout(Duration::from_secs(10), joiner).await;
    assert_eq!(
        answered.expect("the joiner answered").unwrap(),
        Err(NotFound(6))
    );
    assert!((1..=2).contains(&db.reads()), "reads: {}", db.reads());
    cache.settle().await;
    assert_no_state_left(&cache).await;
}
