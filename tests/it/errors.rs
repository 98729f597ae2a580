//! Guarantee 2: an `Err` (and a `None` without `none_ttl`) is returned untouched and not
//! cached; the next call loads again. `None` with `none_ttl` is cached for that long.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cached_redis::{Cache, redis_cached};
use cached_redis_tests::{RedisServer, get_raw, pttl};
use tokio::sync::Barrier;

#[derive(Debug, PartialEq)]
struct DbError(String);

static FLAKY_LOADS: AtomicU32 = AtomicU32::new(0);

/// Fails on its first two loads, then succeeds.
#[redis_cached(key = "flaky:<id>", ttl = "60s", cache = cache)]
async fn flaky(cache: &Cache, id: u32) -> Result<u32, DbError> {
    let n = FLAKY_LOADS.fetch_add(1, Ordering::SeqCst);
    if n < 2 {
        Err(DbError(format!("attempt {n} failed")))
    } else {
        Ok(id * 10)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_returned_untouched_and_never_cached() {
    let server = RedisServer::start();
    let cache = server.cache("errors").await;
    let mut conn = server.conn().await;
    let redis_key = cache.redis_key(&cached_redis::Key::raw("flaky:4"));

    assert_eq!(
        flaky(&cache, 4).await,
        Err(DbError("attempt 0 failed".into()))
    );
    assert_eq!(
        get_raw(&mut conn, &redis_key).await,
        None,
        "an error is not stored"
    );
    assert_eq!(
        flaky(&cache, 4).await,
        Err(DbError("attempt 1 failed".into()))
    );
    assert_eq!(flaky(&cache, 4).await, Ok(40));
    cache.settle().await;
    assert_eq!(flaky(&cache, 4).await, Ok(40));
    assert_eq!(
        FLAKY_LOADS.load(Ordering::SeqCst),
        3,
        "the success is cached"
    );
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.load_errors, stats.hits), (3, 2, 1));
    let lease = format!("{redis_key}:lease");
    assert_eq!(
        get_raw(&mut conn, &lease).await,
        None,
        "a failed load releases its lease"
    );
}

static FAILING_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "failing:<id>", ttl = "60s", cache = cache)]
async fn always_failing(cache: &Cache, id: u32, barrier: Arc<Barrier>) -> Result<u32, DbError> {
    FAILING_LOADS.fetch_add(1, Ordering::SeqCst);
    // The first load waits for everyone to have joined it.
    if FAILING_LOADS.load(Ordering::SeqCst) == 1 {
        barrier.wait().await;
    }
    Err(DbError(format!("no row {id}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_joined_a_failed_load_each_get_an_error_of_their_own() {
    let server = RedisServer::start();
    let cache = server.cache("joined-errors").await;
    let barrier = Arc::new(Barrier::new(2));
    let first = {
        let (cache, barrier) = (cache.clone(), barrier.clone());
        tokio::spawn(async move { always_failing(&cache, 1, barrier).await })
    };
    // Wait until the first load runs, start joiners, then let the load fail.
    assert!(
        cached_redis_tests::eventually(Duration::from_secs(2), || async {
            FAILING_LOADS.load(Ordering::SeqCst) == 1
        })
        .await
    );
    let joiners: Vec<_> = (0..5)
        .map(|_| {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            tokio::spawn(async move { always_failing(&cache, 1, barrier).await })
        })
        .collect();
    assert!(
        cached_redis_tests::eventually(Duration::from_secs(2), || async {
            cache.stats().coalesced == 5
        })
        .await
    );
    barrier.wait().await;
    assert_eq!(first.await.unwrap(), Err(DbError("no row 1".into())));
    for joiner in joiners {
        assert_eq!(joiner.await.unwrap(), Err(DbError("no row 1".into())));
    }
    // The joiners read again and share one more load, which fails too: then each that did
    // not lead it runs the loader itself. Never more loads than callers.
    let loads = FAILING_LOADS.load(Ordering::SeqCst);
    assert!((2..=6).contains(&loads), "{loads} loads");
}

/// Its first load waits at `barrier` and fails; the second waits until every other caller
/// has joined it again (`joined` joins counted in `cache`'s stats), then succeeds. The error
/// cannot be cloned.
#[redis_cached(key = "transient:<id>", ttl = "60s", cache = cache, skip = "loads, barrier, joined")]
async fn transient(
    cache: &Cache,
    id: u32,
    loads: Arc<AtomicU32>,
    barrier: Arc<Barrier>,
    joined: u64,
) -> Result<u32, DbError> {
    match loads.fetch_add(1, Ordering::SeqCst) {
        0 => {
            barrier.wait().await;
            Err(DbError("the database hiccuped".into()))
        }
        _ => {
            let rejoined = || async { cache.stats().coalesced >= joined };
            assert!(cached_redis_tests::eventually(Duration::from_secs(10), rejoined).await);
            Ok(id)
        }
    }
}

/// Issue 27: the callers that joined a failed load whose error cannot be cloned share one
/// more load among themselves, rather than each run the loader (21 loads before): a
/// database that failed for a moment is asked twice for 21 callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_of_a_failed_load_share_one_more_load_when_its_error_cannot_be_cloned() {
    let server = RedisServer::start();
    let cache = server.cache("transient-errors").await;
    let (loads, barrier) = (Arc::new(AtomicU32::new(0)), Arc::new(Barrier::new(2)));
    const JOINERS: u64 = 20;
    // The 20 join the first load, then 19 of them the second.
    let joined = JOINERS + JOINERS - 1;
    let call = || {
        let (cache, loads, barrier) = (cache.clone(), loads.clone(), barrier.clone());
        tokio::spawn(async move { transient(&cache, 3, loads, barrier, joined).await })
    };
    let first = call();
    let running = || async { loads.load(Ordering::SeqCst) == 1 };
    assert!(cached_redis_tests::eventually(Duration::from_secs(5), running).await);
    let joiners: Vec<_> = (0..JOINERS).map(|_| call()).collect();
    let all_joined = || async { cache.stats().coalesced == JOINERS };
    assert!(cached_redis_tests::eventually(Duration::from_secs(5), all_joined).await);
    barrier.wait().await;
    assert!(first.await.unwrap().is_err(), "the leader's own error");
    for joiner in joiners {
        assert_eq!(joiner.await.unwrap(), Ok(3), "the shared second load");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

/// An error that can be cloned: the callers that joined a failed load each take a clone.
#[derive(Debug, Clone, PartialEq)]
struct NotFound(u32);

/// Counts its loads; the first waits at `barrier` until every caller has joined it.
#[redis_cached(key = "missing:<id>", ttl = "60s", cache = cache, skip = "loads, barrier")]
async fn missing_row(
    cache: &Cache,
    id: u32,
    loads: Arc<AtomicU32>,
    barrier: Arc<Barrier>,
) -> Result<u32, NotFound> {
    if loads.fetch_add(1, Ordering::SeqCst) == 0 {
        barrier.wait().await;
    }
    Err(NotFound(id))
}

/// 1 caller leads, `joiners` join its load, and the load fails: how many loads ran.
async fn failed_load_with_joiners(cache: &Cache, joiners: u64) -> u32 {
    let (loads, barrier) = (Arc::new(AtomicU32::new(0)), Arc::new(Barrier::new(2)));
    let call = || {
        let (cache, loads, barrier) = (cache.clone(), loads.clone(), barrier.clone());
        tokio::spawn(async move { missing_row(&cache, 7, loads, barrier).await })
    };
    let coalesced = cache.stats().coalesced;
    let first = call();
    let running = || async { loads.load(Ordering::SeqCst) == 1 };
    assert!(cached_redis_tests::eventually(Duration::from_secs(5), running).await);
    let joined: Vec<_> = (0..joiners).map(|_| call()).collect();
    let all_joined = || async { cache.stats().coalesced - coalesced == joiners };
    assert!(cached_redis_tests::eventually(Duration::from_secs(5), all_joined).await);
    barrier.wait().await;
    assert_eq!(first.await.unwrap(), Err(NotFound(7)));
    for caller in joined {
        assert_eq!(caller.await.unwrap(), Err(NotFound(7)));
    }
    loads.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_joined_a_failed_load_share_a_clone_of_a_cloneable_error() {
    let server = RedisServer::start();
    let cache = server.cache("shared-errors").await;
    assert_eq!(
        failed_load_with_joiners(&cache, 50).await,
        1,
        "one load for 51 callers"
    );
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.load_errors), (1, 1), "{stats:?}");
    cache.settle().await;
    cached_redis_tests::assert_no_state_left(&cache).await;
    // Not cached: the next call loads again.
    assert_eq!(failed_load_with_joiners(&cache, 0).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_callers_that_joined_a_failed_load_share_a_clone_of_its_error() {
    let cache = Cache::in_memory(100);
    assert_eq!(
        failed_load_with_joiners(&cache, 50).await,
        1,
        "one load for 51 callers"
    );
    assert_eq!(failed_load_with_joiners(&cache, 0).await, 1, "not cached");
}

static LOOKUPS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "lookup:<name>", ttl = "60s", cache = cache)]
async fn find_uncached_none(cache: &Cache, name: &str) -> Option<String> {
    LOOKUPS.fetch_add(1, Ordering::SeqCst);
    (name == "known").then(|| "found".to_owned())
}

static NEGATIVE_LOOKUPS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "neg:<name>", ttl = "60s", none_ttl = "2s", cache = cache)]
async fn find_cached_none(cache: &Cache, name: &str) -> Option<String> {
    NEGATIVE_LOOKUPS.fetch_add(1, Ordering::SeqCst);
    (name == "known").then(|| "found".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_is_cached_only_with_none_ttl() {
    let server = RedisServer::start();
    let cache = server.cache("none").await;
    let mut conn = server.conn().await;

    assert_eq!(find_uncached_none(&cache, "missing").await, None);
    assert_eq!(find_uncached_none(&cache, "missing").await, None);
    assert_eq!(
        LOOKUPS.load(Ordering::SeqCst),
        2,
        "None is not cached without none_ttl"
    );
    assert_eq!(
        find_uncached_none(&cache, "known").await.as_deref(),
        Some("found")
    );
    assert_eq!(
        find_uncached_none(&cache, "known").await.as_deref(),
        Some("found")
    );
    assert_eq!(LOOKUPS.load(Ordering::SeqCst), 3, "Some is cached");

    assert_eq!(find_cached_none(&cache, "missing").await, None);
    assert_eq!(find_cached_none(&cache, "missing").await, None);
    assert_eq!(
        NEGATIVE_LOOKUPS.load(Ordering::SeqCst),
        1,
        "None is cached with none_ttl"
    );
    let key = cache.redis_key(&cached_redis::Key::raw("neg:missing"));
    let ttl = pttl(&mut conn, &key).await;
    assert!(
        (1..=2000).contains(&ttl),
        "None lives at most none_ttl: {ttl} ms"
    );
    let stored = String::from_utf8(get_raw(&mut conn, &key).await.unwrap()).unwrap();
    assert!(stored.starts_with(r#"{"v":null"#), "{stored}");
}

static OPTIONAL_ROWS: AtomicU32 = AtomicU32::new(0);

/// What sqlx's `fetch_optional` returns: `Ok(None)` is a miss like `None`, not a value.
#[redis_cached(key = "row:<id>", ttl = "60s", cache = cache)]
async fn fetch_optional(cache: &Cache, id: u32) -> Result<Option<u32>, String> {
    OPTIONAL_ROWS.fetch_add(1, Ordering::SeqCst);
    Ok((id == 1).then_some(100))
}

static OPTIONAL_NEGATIVE: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "neg-row:<id>", ttl = "60s", none_ttl = "2s", cache = cache)]
async fn fetch_optional_cached_none(cache: &Cache, id: u32) -> Result<Option<u32>, String> {
    OPTIONAL_NEGATIVE.fetch_add(1, Ordering::SeqCst);
    Ok((id == 1).then_some(100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_none_is_cached_only_with_none_ttl() {
    let server = RedisServer::start();
    let cache = server.cache("ok-none").await;
    let mut conn = server.conn().await;
    assert_eq!(fetch_optional(&cache, 2).await, Ok(None));
    assert_eq!(fetch_optional(&cache, 2).await, Ok(None));
    assert_eq!(
        OPTIONAL_ROWS.load(Ordering::SeqCst),
        2,
        "Ok(None) is not cached without none_ttl"
    );
    assert_eq!(fetch_optional(&cache, 1).await, Ok(Some(100)));
    assert_eq!(fetch_optional(&cache, 1).await, Ok(Some(100)));
    assert_eq!(
        OPTIONAL_ROWS.load(Ordering::SeqCst),
        3,
        "Ok(Some) is cached"
    );

    assert_eq!(fetch_optional_cached_none(&cache, 2).await, Ok(None));
    assert_eq!(fetch_optional_cached_none(&cache, 2).await, Ok(None));
    assert_eq!(
        OPTIONAL_NEGATIVE.load(Ordering::SeqCst),
        1,
        "cached with none_ttl"
    );
    let key = cache.redis_key(&cached_redis::Key::raw("neg-row:2"));
    let ttl = pttl(&mut conn, &key).await;
    assert!(
        (1..=2000).contains(&ttl),
        "Ok(None) lives at most none_ttl: {ttl} ms"
    );
}

static NULL_COLUMNS: AtomicU32 = AtomicU32::new(0);

/// A row whose column is NULL, as `query_scalar::<_, Option<T>>(..).fetch_optional()` returns
/// it: `Ok(Some(None))`, which JSON would store as the same `null` as `Ok(None)`.
#[redis_cached(key = "nullable:<id>", ttl = "60s", cache = cache)]
async fn nullable_column(cache: &Cache, id: u32) -> Result<Option<Option<u32>>, String> {
    NULL_COLUMNS.fetch_add(1, Ordering::SeqCst);
    Ok(Some((id == 1).then_some(7)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_with_a_null_column_is_never_read_back_as_no_row() {
    let server = RedisServer::start();
    let cache = server.cache("nullable").await;
    assert_eq!(nullable_column(&cache, 2).await, Ok(Some(None)));
    assert_eq!(
        nullable_column(&cache, 2).await,
        Ok(Some(None)),
        "not read back as Ok(None)"
    );
    assert_eq!(NULL_COLUMNS.load(Ordering::SeqCst), 2, "not stored");
    assert_eq!(nullable_column(&cache, 1).await, Ok(Some(Some(7))));
    assert_eq!(nullable_column(&cache, 1).await, Ok(Some(Some(7))));
    assert_eq!(NULL_COLUMNS.load(Ordering::SeqCst), 3, "a value is cached");
}

/// A jsonb column holding `null`, and a NaN inside a `Some` (bare and in a newtype): JSON
/// writes each as `null`, so stored it would read back as `None`.
#[redis_cached(key = "json-null:<id>", ttl = "60s", cache = cache)]
async fn json_column(cache: &Cache, id: u32) -> Result<Option<serde_json::Value>, String> {
    Ok(Some(match id {
        0 => serde_json::Value::Null,
        _ => serde_json::json!(id),
    }))
}

#[redis_cached(key = "nan:<id>", ttl = "60s", cache = cache)]
async fn measured(cache: &Cache, id: u32) -> Option<f64> {
    Some(if id == 0 { f64::NAN } else { f64::from(id) })
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Reading(f64);

#[redis_cached(key = "reading:<id>", ttl = "60s", cache = cache)]
async fn reading(cache: &Cache, id: u32) -> Option<Reading> {
    Some(Reading(if id == 0 { f64::NAN } else { f64::from(id) }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_some_of_what_is_written_as_null_is_never_read_back_as_none() {
    let server = RedisServer::start();
    let cache = server.cache("json-null").await;
    for _ in 0..2 {
        assert_eq!(
            json_column(&cache, 0).await,
            Ok(Some(serde_json::Value::Null))
        );
        assert!(measured(&cache, 0).await.is_some_and(f64::is_nan));
        assert!(reading(&cache, 0).await.is_some_and(|r| r.0.is_nan()));
    }
    let mut conn = server.conn().await;
    for key in [json_column_key(0), measured_key(0), reading_key(0)] {
        assert_eq!(
            get_raw(&mut conn, &cache.redis_key(&key)).await,
            None,
            "not stored"
        );
    }
    assert_eq!(json_column(&cache, 3).await, Ok(Some(serde_json::json!(3))));
    cache.settle().await;
    assert!(
        get_raw(&mut conn, &cache.redis_key(&json_column_key(3)))
            .await
            .is_some()
    );
}
