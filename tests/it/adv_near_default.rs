//! Adversarial tests of `near_by_default`: the compile-time probe of each function's return
//! type (what it keeps, what it refuses, what fails to compile), `near = "off"`, and the
//! guarantees a copy kept by default must keep (never past its entry's TTL, dropped by every
//! write, never of an error, an uncached `None` or a rejected value).
//!
//! `bug_*` tests fail now (they show a bug); `held_*` tests pass (the guarantee held).

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cached_redis::{Cache, Key, Policy, redis_cached};
use cached_redis_tests::{
    HeldDb, Proxy, RedisServer, command_calls, eventually, near_by_default_cache, near_caught_up,
    pttl, until_near_hit,
};
use serde::{Deserialize, Serialize};

/// A cache whose functions keep their values near for `keep` by default, once its tracking
/// connection is live.
async fn by_default(server: &RedisServer, namespace: &str, keep: Duration) -> Cache {
    near_by_default_cache(&server.url(), namespace, keep).await
}

/// Whether some call of `call` within 5 s is a near hit (a copy is usually kept from the
/// second Redis hit on).
async fn some_near_hit<F, Fut>(cache: &Cache, mut call: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    eventually(Duration::from_secs(5), || {
        let before = cache.stats().near_hits;
        let called = call();
        async move {
            called.await;
            cache.stats().near_hits > before
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------
// The probe: what is kept by type.
// ---------------------------------------------------------------------------------------

// The probe's compile-time cases (methods of generic `impl`s whose return type names the
// `impl`'s `T`) are tests/ui/pass/found_near_generic_impl.rs and
// found_generic_impl_cloneable_error.rs, which tests/ui.rs compiles.

/// A value type that can be copied, returned as `Self` by a method of a non-generic `impl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Thing {
    id: u32,
}

impl Thing {
    #[redis_cached(key = "thing:<id>", ttl = "60s", cache = cache)]
    async fn load(cache: &Cache, loads: &AtomicU32, id: u32) -> Result<Self, String> {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok(Thing { id })
    }

    #[redis_cached(key = "thing-named:<id>", ttl = "60s", cache = cache)]
    async fn load_named(cache: &Cache, loads: &AtomicU32, id: u32) -> Result<Thing, String> {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok(Thing { id })
    }
}

/// A method's value type spelled out is kept near; spelled `Self`, which the expansion cannot
/// tell from a generic `impl`'s type, it reads Redis (the guide says so), and answers the same.
/// (Was `bug_self_in_a_non_generic_impl_is_never_kept`, which asked that `Self` be kept: the
/// expansion sees the function, not its `impl`, so the guide now states the limit instead.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_method_s_spelled_out_type_is_kept_and_self_reads_redis() {
    let server = RedisServer::start();
    let cache = by_default(&server, "adv-nd-self", Duration::from_secs(30)).await;
    let loads = AtomicU32::new(0);
    let named = some_near_hit(&cache, || async {
        assert_eq!(
            Thing::load_named(&cache, &loads, 1).await,
            Ok(Thing { id: 1 })
        );
    })
    .await;
    assert!(named, "`Result<Thing, String>` is kept near");
    let near_hits = cache.stats().near_hits;
    for _ in 0..5 {
        assert_eq!(Thing::load(&cache, &loads, 2).await, Ok(Thing { id: 2 }));
    }
    assert_eq!(cache.stats().near_hits, near_hits, "`Self` is not probed");
}

/// An alias of a `Result` whose error cannot be cloned: the value can, so it is kept.
type IoResult<T> = Result<T, std::io::Error>;

#[redis_cached(key = "alias:<id>", ttl = "60s", cache = cache)]
async fn aliased(cache: &Cache, id: u32) -> IoResult<u64> {
    Ok(u64::from(id) + 1)
}

/// `Result<Option<T>, E>` (sqlx's `fetch_optional`) of a copyable `T`.
#[redis_cached(key = "opt:<id>", ttl = "60s", cache = cache)]
async fn optional_row(cache: &Cache, id: u32) -> Result<Option<u64>, std::io::Error> {
    Ok(Some(u64::from(id)))
}

/// An `Arc` of a type that is not `Clone`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Big {
    n: u32,
}

#[redis_cached(key = "arc:<id>", ttl = "60s", cache = cache)]
async fn arced(cache: &Cache, id: u32) -> Option<std::sync::Arc<Big>> {
    Some(std::sync::Arc::new(Big { n: id }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_aliases_optional_rows_and_arcs_are_kept() {
    let server = RedisServer::start();
    let cache = by_default(&server, "adv-nd-alias", Duration::from_secs(30)).await;
    until_near_hit(&cache, || async {
        assert_eq!(aliased(&cache, 1).await.unwrap(), 2);
    })
    .await;
    until_near_hit(&cache, || async {
        assert_eq!(optional_row(&cache, 2).await.unwrap(), Some(2));
    })
    .await;
    until_near_hit(&cache, || async {
        assert_eq!(arced(&cache, 3).await.unwrap().n, 3);
    })
    .await;
}

/// Clone but neither `Send` nor `Sync`.
#[redis_cached(key = "rc:<id>", ttl = "60s", cache = cache)]
async fn rc_value(cache: &Cache, id: u32) -> Result<Rc<u64>, String> {
    Ok(Rc::new(u64::from(id)))
}

/// Clone and `Send`, not `Sync`.
#[redis_cached(key = "cell:<id>", ttl = "60s", cache = cache)]
async fn cell_value(cache: &Cache, id: u32) -> Option<Cell<u64>> {
    Some(Cell::new(u64::from(id)))
}

/// A generic function: its return type names its parameter, so it is not probed (even where
/// its bounds would let it be kept).
#[redis_cached(key = "generic:<T>:<id>", ttl = "60s", cache = cache)]
async fn generic_value<
    T: Serialize + serde::de::DeserializeOwned + Default + Clone + Send + Sync + 'static,
>(
    cache: &Cache,
    id: u32,
) -> Result<T, String> {
    let _ = id;
    Ok(T::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_values_not_send_or_sync_and_generic_returns_read_redis() {
    let server = RedisServer::start();
    let cache = by_default(&server, "adv-nd-nosync", Duration::from_secs(30)).await;
    for _ in 0..20 {
        assert_eq!(*rc_value(&cache, 1).await.unwrap(), 1);
        assert_eq!(cell_value(&cache, 2).await.unwrap().get(), 2);
        assert_eq!(generic_value::<u64>(&cache, 3).await, Ok(0));
    }
    let stats = cache.stats();
    assert_eq!(stats.near_hits, 0, "nothing served from memory");
    assert_eq!(stats.near_entries, 0, "nothing kept");
    assert_eq!(stats.hits, 57, "every call after each first read Redis");
}

/// A trait whose implementation caches with `helpers = false`.
trait Repo {
    async fn get(&self, loads: &AtomicU32, id: u32) -> Result<u64, String>;
}

struct CachedRepo {
    cache: Cache,
}

impl Repo for CachedRepo {
    #[redis_cached(key = "repo:<id>", ttl = "60s", cache = &self.cache, helpers = false)]
    async fn get(&self, loads: &AtomicU32, id: u32) -> Result<u64, String> {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok(u64::from(id) * 3)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_trait_impl_method_keeps_copies_and_its_invalidation_drops_them() {
    let server = RedisServer::start();
    let cache = by_default(&server, "adv-nd-trait", Duration::from_secs(30)).await;
    let repo = CachedRepo {
        cache: cache.clone(),
    };
    let loads = AtomicU32::new(0);
    until_near_hit(&cache, || async {
        assert_eq!(repo.get(&loads, 4).await, Ok(12));
    })
    .await;
    let key = Key::builder().text("repo:").part(&4u32).build();
    assert!(cache.invalidate(&key).await.unwrap());
    let before = loads.load(Ordering::SeqCst);
    assert_eq!(repo.get(&loads, 4).await, Ok(12));
    assert_eq!(
        loads.load(Ordering::SeqCst),
        before + 1,
        "the call after the invalidation loads: the copy went with the entry"
    );
}

// ---------------------------------------------------------------------------------------
// `near = "off"`.
// ---------------------------------------------------------------------------------------

#[redis_cached(key = "shared:<id>", ttl = "60s", cache = cache)]
async fn shared_on(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

#[redis_cached(key = "shared:<id>", ttl = "60s", near = "off", cache = cache)]
async fn shared_off(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// A function with `near = "off"` sharing its key (and value type) with one that keeps copies
/// by default must never answer from that copy: another process's write reaches it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_off_never_answers_from_another_function_s_copy() {
    let server = RedisServer::start();
    let cache = by_default(&server, "adv-nd-offshared", Duration::from_secs(30)).await;
    let db = HeldDb::new(1);
    until_near_hit(&cache, || async {
        assert_eq!(shared_on(&cache, &db, 1).await, Ok(1));
    })
    .await;
    let mut conn = server.conn().await;
    let gets = command_calls(&mut conn, "get").await;
    let near_hits = cache.stats().near_hits;
    for _ in 0..10 {
        assert_eq!(shared_off(&cache, &db, 1).await, Ok(1));
    }
    assert_eq!(
        cache.stats().near_hits,
        near_hits,
        "`near = \"off\"` serves no copy"
    );
    assert_eq!(
        command_calls(&mut conn, "get").await,
        gets + 10,
        "every call of the function with `near = \"off\"` reads Redis"
    );
}

#[redis_cached(key = "offbatch:<id>", ttl = "60s", near = "off", cache = cache, batch)]
async fn off_batch(cache: &Cache, ids: &[u32]) -> HashMap<u32, u64> {
    ids.iter().map(|id| (*id, u64::from(*id) * 2)).collect()
}

#[redis_cached(key = "offrow:<id>", ttl = "60s", near = "off", cache = cache)]
async fn off_row(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// `near = "off"` keeps nothing: not its batch function's hits, nor after `update_*` or
/// `refresh_*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_off_keeps_nothing_through_batches_updates_and_refreshes() {
    let server = RedisServer::start();
    let cache = by_default(&server, "adv-nd-off", Duration::from_secs(30)).await;
    let db = HeldDb::new(5);
    let mut conn = server.conn().await;
    let mgets = command_calls(&mut conn, "mget").await;
    for _ in 0..10 {
        assert_eq!(off_batch(&cache, &[1, 2]).await[&2], 4);
        assert_eq!(off_row(&cache, &db, 1).await, Ok(5));
    }
    assert!(update_off_row(&cache, 1, |v| *v = 6).await.unwrap());
    db.set_version(7);
    assert_eq!(refresh_off_row(&cache, &db, 1).await.unwrap(), Ok(7));
    for _ in 0..10 {
        assert_eq!(off_row(&cache, &db, 1).await, Ok(7));
    }
    let stats = cache.stats();
    assert_eq!(stats.near_hits, 0, "nothing served from memory");
    assert_eq!(stats.near_entries, 0, "nothing kept");
    assert_eq!(
        command_calls(&mut conn, "mget").await,
        mgets + 10,
        "every batch call reads Redis"
    );
}

// ---------------------------------------------------------------------------------------
// What a copy kept by default must never be.
// ---------------------------------------------------------------------------------------

#[redis_cached(key = "failing:<id>", ttl = "60s", cache = cache)]
async fn failing(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

#[redis_cached(key = "none:<id>", ttl = "60s", cache = cache)]
async fn none_row(cache: &Cache, db: &HeldDb, id: u32) -> Result<Option<u64>, String> {
    let _ = id;
    db.read().await.map(|_| None)
}

#[redis_cached(key = "rejected:<id>", ttl = "60s", cache = cache, cache_if = |v: &u64| *v > 100)]
async fn rejected(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// Errors, a `None` without `none_ttl` and a value `cache_if` rejects are neither cached nor
/// kept: every call loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_errors_uncached_nones_and_rejected_values_are_never_kept() {
    let server = RedisServer::start();
    let cache = by_default(&server, "adv-nd-never", Duration::from_secs(30)).await;
    let (down, empty, small) = (HeldDb::new(1), HeldDb::new(2), HeldDb::new(3));
    down.fail(true);
    for _ in 0..10 {
        assert!(failing(&cache, &down, 1).await.is_err());
        assert_eq!(none_row(&cache, &empty, 1).await, Ok(None));
        assert_eq!(rejected(&cache, &small, 1).await, Ok(3));
    }
    assert_eq!(
        (down.reads(), empty.reads(), small.reads()),
        (10, 10, 10),
        "every call loads: an error, an uncached None and a rejected value are never kept"
    );
    let stats = cache.stats();
    assert_eq!(stats.near_hits, 0);
    assert_eq!(stats.near_entries, 0);
}

// ---------------------------------------------------------------------------------------
// A copy never outlives its entry's TTL.
// ---------------------------------------------------------------------------------------

#[redis_cached(key = "jit:<id>", ttl = "2s", jitter = "50%", cache = cache)]
async fn jittered(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// A copy kept for a default far longer than the entry's drawn TTL ends with the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_default_copy_ends_with_its_jittered_entry() {
    let server = RedisServer::start();
    let cache = by_default(&server, "adv-nd-jitter", Duration::from_secs(3600)).await;
    let db = HeldDb::new(1);
    until_near_hit(&cache, || async {
        assert_eq!(jittered(&cache, &db, 1).await, Ok(1));
    })
    .await;
    let mut conn = server.conn().await;
    let left = pttl(&mut conn, "adv-nd-jitter:{jit:1}").await;
    assert!(left > 0 && left <= 2_000, "a drawn TTL: {left} ms");
    db.set_version(2);
    // Let the entry's TTL pass; Redis may not have expired it (nor told the tracker) yet.
    tokio::time::sleep(Duration::from_millis(left as u64 + 20)).await;
    assert_eq!(
        jittered(&cache, &db, 1).await,
        Ok(2),
        "past its entry's TTL no copy answers"
    );
}

#[redis_cached(key = "stale:<id>", ttl = "1s", stale = "1m", cache = cache)]
async fn stale_row(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// A `stale` function's copy ends at the end of its TTL (the entry lives on for `stale`): the
/// call after it reads Redis and refreshes (in the caller: the body borrows `db`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_stale_function_s_default_copy_ends_at_its_ttl() {
    let server = RedisServer::start();
    let cache = by_default(&server, "adv-nd-stale", Duration::from_secs(3600)).await;
    let db = HeldDb::new(1);
    until_near_hit(&cache, || async {
        assert_eq!(stale_row(&cache, &db, 1).await, Ok(1));
    })
    .await;
    let reads = db.reads();
    db.set_version(2);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let near_hits = cache.stats().near_hits;
    assert_eq!(
        stale_row(&cache, &db, 1).await,
        Ok(2),
        "past the TTL the call refreshes, not a copy"
    );
    assert_eq!(
        cache.stats().near_hits,
        near_hits,
        "past the TTL the call is not a near hit"
    );
    assert_eq!(db.reads(), reads + 1);
}

#[redis_cached(key = "fs:<id>", ttl = "1s", fail_safe = "1h", cache = cache)]
async fn fail_safe_row(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

#[redis_cached(key = "fs:<id>", ttl = "1s", cache = cache)]
async fn plain_row(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

#[redis_cached(key = "fs:<id>", ttl = "1s", cache = cache, batch)]
async fn batch_rows(cache: &Cache, db: &HeldDb, ids: &[u32]) -> Result<HashMap<u32, u64>, String> {
    let version = db.read().await?;
    Ok(ids.iter().map(|id| (*id, version)).collect())
}

/// Two functions share a key and its value type: one with `fail_safe` (its entry lives an
/// hour past its 1 s TTL), one without. The plain function keeps its copy by the entry's PTTL
/// (the hour), and the `fail_safe` function then answers from that copy past its own TTL,
/// without loading: a copy of its entry outlives the end of the TTL the entry carries. (The
/// plain function answering such an entry from Redis is documented; the `fail_safe` one
/// answering it is not. A batch function's copy is bounded by the entry's soft expiry:
/// `held_a_batch_copy_ends_at_the_fail_safe_entry_s_ttl`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Failed on 73b196f (found by the adversary, fixed since: a single read's copy now ends at the
// entry's soft expiry, as a batch's did).
async fn found_a_fail_safe_function_never_answers_a_plain_function_s_copy_past_its_ttl() {
    let server = RedisServer::start();
    let cache = by_default(&server, "adv-nd-fs", Duration::from_secs(3600)).await;
    let db = HeldDb::new(1);
    assert_eq!(fail_safe_row(&cache, &db, 1).await, Ok(1));
    until_near_hit(&cache, || async {
        assert_eq!(plain_row(&cache, &db, 1).await, Ok(1));
    })
    .await;
    db.set_version(2);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        fail_safe_row(&cache, &db, 1).await,
        Ok(2),
        "past its TTL a fail_safe function loads (its load succeeds), not a copy another function kept"
    );
}

/// As above, with the copy kept by a batch function: its copy ends at the entry's soft
/// expiry, so the `fail_safe` function loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_batch_copy_ends_at_the_fail_safe_entry_s_ttl() {
    let server = RedisServer::start();
    let cache = by_default(&server, "adv-nd-fsb", Duration::from_secs(3600)).await;
    let db = HeldDb::new(1);
    assert_eq!(fail_safe_row(&cache, &db, 1).await, Ok(1));
    until_near_hit(&cache, || async {
        assert_eq!(batch_rows(&cache, &db, &[1]).await.unwrap()[&1], 1);
    })
    .await;
    db.set_version(2);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        fail_safe_row(&cache, &db, 1).await,
        Ok(2),
        "past its TTL a fail_safe function loads, not a copy a batch kept"
    );
}

// ---------------------------------------------------------------------------------------
// Writes drop copies kept by default.
// ---------------------------------------------------------------------------------------

#[redis_cached(key = "w:<id>", ttl = "60s", cache = cache)]
async fn written(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// Another process's `update_*` drops this process's default copy once its message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_another_process_s_update_drops_a_default_copy() {
    let server = RedisServer::start();
    let reader = by_default(&server, "adv-nd-upd", Duration::from_secs(3600)).await;
    let writer = server.cache("adv-nd-upd").await;
    let db = HeldDb::new(1);
    until_near_hit(&reader, || async {
        assert_eq!(written(&reader, &db, 1).await, Ok(1));
    })
    .await;
    assert!(update_written(&writer, 1, |v| *v = 99).await.unwrap());
    near_caught_up(&reader).await;
    assert_eq!(
        written(&reader, &db, 1).await,
        Ok(99),
        "once Redis's message is applied, no copy of the old value answers"
    );
}

/// The proxy's index of `cache`'s tracking connection (the client whose flags hold `t`).
async fn tracking_connection(
    proxy: &Proxy,
    admin: &mut redis::aio::MultiplexedConnection,
) -> usize {
    proxy
        .connection_of_client(admin, |fields| {
            fields
                .iter()
                .any(|f| f.starts_with("flags=") && f.contains('t'))
        })
        .await
        .expect("the tracking connection")
}

/// This process's `update_*`, `refresh_*`, `invalidate_prefix`, `clear` and
/// `invalidate_all_*` drop its default copy before they return: with Redis's messages held
/// (Redis writes a write's invalidation to the tracking connection before the writer's reply,
/// so without holding them the message would explain a fresh read too), the read right after
/// each still sees the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_own_writes_drop_a_default_copy_before_they_return() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = Cache::builder(&proxy.url())
        .namespace("adv-nd-own")
        .op_timeout(Duration::from_secs(5))
        .near_cache(1_000)
        .near_max_lag(Duration::from_secs(10))
        .near_by_default(Duration::from_secs(3600))
        .build()
        .await
        .expect("valid cache configuration");
    assert!(eventually(Duration::from_secs(10), || async { cache.near_is_live() }).await);
    let mut admin = server.conn().await;
    let tracking = tracking_connection(&proxy, &mut admin).await;
    let db = HeldDb::new(1);
    let warm = |expected: u64| {
        let (cache, db) = (&cache, &db);
        async move {
            until_near_hit(cache, || async {
                assert_eq!(written(cache, db, 1).await, Ok(expected));
            })
            .await;
        }
    };
    warm(1).await;
    proxy.hold_replies(tracking);
    assert!(update_written(&cache, 1, |v| *v = 2).await.unwrap());
    assert_eq!(written(&cache, &db, 1).await, Ok(2), "after update_*");
    proxy.release_replies(tracking);
    warm(2).await;
    db.set_version(3);
    proxy.hold_replies(tracking);
    assert_eq!(refresh_written(&cache, &db, 1).await.unwrap(), Ok(3));
    assert_eq!(written(&cache, &db, 1).await, Ok(3), "after refresh_*");
    proxy.release_replies(tracking);
    warm(3).await;
    db.set_version(4);
    proxy.hold_replies(tracking);
    assert!(cache.invalidate_prefix("w:").await.unwrap() >= 1);
    assert_eq!(
        written(&cache, &db, 1).await,
        Ok(4),
        "after invalidate_prefix"
    );
    proxy.release_replies(tracking);
    warm(4).await;
    db.set_version(5);
    proxy.hold_replies(tracking);
    assert!(cache.clear().await.unwrap() >= 1);
    assert_eq!(written(&cache, &db, 1).await, Ok(5), "after clear");
    proxy.release_replies(tracking);
    warm(5).await;
    db.set_version(6);
    proxy.hold_replies(tracking);
    assert!(invalidate_all_written(&cache).await.unwrap() >= 1);
    assert_eq!(
        written(&cache, &db, 1).await,
        Ok(6),
        "after invalidate_all_*"
    );
    proxy.release_replies(tracking);
}

// ---------------------------------------------------------------------------------------
// Without the attribute.
// ---------------------------------------------------------------------------------------

/// `Cache::fetch_near` with a policy without `near` takes the cache's default; `Cache::fetch`
/// keeps and serves nothing; a cache with a near cache but no default keeps nothing for such a
/// policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_fetch_near_takes_the_default_and_fetch_keeps_nothing() {
    let server = RedisServer::start();
    let cache = by_default(&server, "adv-nd-fetch", Duration::from_secs(30)).await;
    let policy = Policy::new("adv_fetch", Duration::from_secs(60)).unwrap();
    let key = Key::raw("fetched");
    until_near_hit(&cache, || async {
        let got: Result<u64, String> = cache.fetch_near(&key, &policy, async { Ok(8) }).await;
        assert_eq!(got, Ok(8));
    })
    .await;
    let (near_hits, entries) = (cache.stats().near_hits, cache.stats().near_entries);
    let other = Key::raw("fetched-plain");
    for _ in 0..10 {
        let got: Result<u64, String> = cache.fetch(&key, &policy, async { Ok(9) }).await;
        assert_eq!(got, Ok(8));
        let got: Result<u64, String> = cache.fetch(&other, &policy, async { Ok(9) }).await;
        assert_eq!(got, Ok(9));
    }
    assert_eq!(cache.stats().near_hits, near_hits, "fetch serves no copy");
    assert_eq!(cache.stats().near_entries, entries, "fetch keeps no copy");

    let without = server
        .cache_builder("adv-nd-fetch2")
        .near_cache(1_000)
        .build()
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || async { without.near_is_live() }).await);
    for _ in 0..20 {
        let got: Result<u64, String> = without.fetch_near(&key, &policy, async { Ok(1) }).await;
        assert_eq!(got, Ok(1));
    }
    if !cached_redis_tests::near_pass() {
        assert_eq!(without.stats().near_hits, 0, "no near, no default: no copy");
        assert_eq!(without.stats().near_entries, 0);
    }
}
