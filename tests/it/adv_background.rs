//! Adversarial tests of the newest freshness features: the soft expiry stored in the entry
//! (`exp`), `back_off`, and refreshes in the background (`read/detach.rs`,
//! `__private/detached.rs`, the expansion's `detachable`).
//!
//! Tests named `found_*` failed on the code they were written against (13d28f8), each showing
//! a guarantee broken (quoted in its doc comment), and pass since the fix it names. Tests
//! named `held_*` are attacks that held.
//! Races are held open with `HeldDb` (a read held after it read the row), gates, channels and
//! a paused Redis; every call that could hang is bounded by a timeout, so a hang is a failure.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cached_redis::{Cache, override_global, redis_cached, with_cache};
use cached_redis_tests::{
    CancelAfter, Gate, HeldDb, RedisServer, assert_no_state_left, command_calls, config_set,
    eventually, get_raw, near_caught_up, near_pass, pttl, stale,
};

/// A database row owned by the function's future (an `Arc`, not a `&HeldDb`), so the
/// functions below refresh in the background.
type Db = Arc<HeldDb>;

fn db(version: u64) -> Db {
    Arc::new(HeldDb::new(version))
}

/// Bounds a call that must not hang.
async fn within<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 20 s"))
}

/// Ages the entry at `redis_key` until Redis has `left_ms` of it left (its soft expiry and
/// load time moved back as much).
/// In the near pass, `caches`' copies of the entry go with Redis's message for the rewrite
/// before this returns.
async fn age(server: &RedisServer, caches: &[&Cache], redis_key: &str, left_ms: u64) {
    let mut conn = server.conn().await;
    assert!(
        stale::expire_in(&mut conn, redis_key, left_ms).await,
        "{redis_key} is cached"
    );
    for cache in caches {
        near_caught_up(cache).await;
    }
}

/// Into the stale window of a `ttl = "60s", stale = "60s"` function: 30 s past its TTL.
const STALE_LEFT_MS: u64 = 30_000;

async fn lease_exists(server: &RedisServer, redis_key: &str) -> bool {
    let mut conn = server.conn().await;
    let n: u32 = redis::cmd("EXISTS")
        .arg(format!("{redis_key}:lease"))
        .query_async(&mut conn)
        .await
        .unwrap();
    n == 1
}

async fn no_lease_soon(server: &RedisServer, redis_key: &str) -> bool {
    eventually(Duration::from_secs(3), || async {
        !lease_exists(server, redis_key).await
    })
    .await
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The stored envelope (JSON) at `redis_key`.
async fn envelope(server: &RedisServer, redis_key: &str) -> Option<serde_json::Value> {
    let mut conn = server.conn().await;
    let raw = get_raw(&mut conn, redis_key).await?;
    Some(serde_json::from_slice(&raw).expect("a JSON envelope"))
}

// ---------------------------------------------------------------------------------------------
// 1. `update_*` straddling a refresh's write-back.

#[redis_cached(key = "row:<id>", ttl = "60s", stale = "60s", cache = cache, skip = "db")]
async fn row(cache: &Cache, db: Db, id: u64) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// Found (failed on 13d28f8; fixed by the update's first read revoking the entry's lease,
/// `lease::read_revoking`). Guarantee attacked: README, "No stale value after a write: a read that starts after
/// `invalidate_*` returned never gets a value loaded before it", `update`'s contract
/// ("`Ok(false)` means no cached value was changed, and none that misses the change is left:
/// ... a load replaced the entry after the update read it (that value is newer)") and the
/// guarantees page ("a refresh ... that an invalidation or an `update_*` overtook stores
/// nothing").
///
/// A refresh (here in the background) takes the lease while the stale entry is still cached
/// and reads the row (version 1). The row is written (version 2) and `update_row` runs from
/// another process: it reads the entry; before its compare-and-set, the refresh returns and
/// writes back under its still-valid lease (the update's compare-and-set deletes the lease,
/// but only when it comes first). The compare-and-set then conflicts, the next round finds an
/// entry with another load's origin, takes it for a newer load ("Replaced") and returns
/// `Ok(false)`. That load read the row before the write: version 1 is now cached, fresh for a
/// whole TTL, and every read after the completed update gets it. What happened: `Ok(1)`.
/// Cause: `write/update.rs` (`rewrite`: an origin change is taken as a newer load; true of a
/// miss's load, which cannot start while the entry is cached, not of a refresh's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_an_update_straddling_a_refresh_write_back_is_not_lost() {
    let server = RedisServer::start();
    let a = server.cache("adv-bg-straddle").await;
    let b = server.cache("adv-bg-straddle").await;
    let db = db(1);
    assert_eq!(row(&a, db.clone(), 1).await, Ok(1));
    a.settle().await;
    let redis_key = a.redis_key(&row_key(1));
    age(&server, &[&a, &b], &redis_key, STALE_LEFT_MS).await;
    // The refresh reads version 1 and is held before it returns.
    let read = db.hold_next_read();
    assert_eq!(
        within("the stale call", row(&a, db.clone(), 1)).await,
        Ok(1),
        "the stale entry, at once"
    );
    within("the refresh's read", read).await;

    // The write: the row, then the cached value in place, from process b. The update's change
    // runs between its GET and its compare-and-set; the first time, it waits there for the
    // test (a slow network between the two would do the same).
    db.set_version(2);
    let (to_test, from_update) = std::sync::mpsc::channel::<()>();
    let (to_update, from_test) = std::sync::mpsc::channel::<()>();
    let runs = Arc::new(AtomicU32::new(0));
    let update = tokio::spawn({
        let (b, runs) = (b.clone(), runs.clone());
        async move {
            update_row(&b, 1, move |v: &mut u64| {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    to_test.send(()).unwrap();
                    tokio::task::block_in_place(|| from_test.recv().unwrap());
                }
                *v = 2;
            })
            .await
        }
    });
    within(
        "the update's first read",
        tokio::task::spawn_blocking(move || from_update.recv().unwrap()),
    )
    .await
    .unwrap();
    // Meanwhile the refresh returns and writes back.
    db.release();
    within("the refresh's write-back", a.settle()).await;
    to_update.send(()).unwrap();
    let changed = within("the update", update).await.unwrap().unwrap();

    let after = within("the read after the update", row(&b, db.clone(), 1)).await;
    assert_eq!(
        after,
        Ok(2),
        "a read after the update returned (Ok({changed}), change run {} times) got the row \
         from before the write; Redis holds {:?}",
        runs.load(Ordering::SeqCst),
        envelope(&server, &redis_key).await
    );
}

// ---------------------------------------------------------------------------------------------
// 2. `with_cache` and the refresh's task.

static TENANT_INNER_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "tenant-inner:<id>", ttl = "60s")]
async fn tenant_inner(id: u64) -> Result<u64, String> {
    Ok(id * 100 + u64::from(TENANT_INNER_LOADS.fetch_add(1, Ordering::SeqCst)))
}

/// Borrows nothing: refreshes in the background. Both use the default (global) cache.
#[redis_cached(key = "tenant-outer:<id>", ttl = "60s", stale = "60s")]
async fn tenant_outer(id: u64) -> Result<u64, String> {
    tenant_inner(id).await
}

/// Found (failed on 13d28f8; fixed: the refresh's task runs under its caller's `with_cache`
/// scope, `global::within_scope`). Guarantee attacked: `with_cache` ("Runs `future` with `cache` as the default of every
/// `#[redis_cached]` function it calls without its own `cache = ...`, in place of the global
/// one, for this future only"; README: "`with_cache` gives one future (not the tasks it
/// spawns) its own global cache").
///
/// `tenant_outer` and the `tenant_inner` its body calls both use the default cache, and are
/// called inside `with_cache(tenant, ..)`; the process default is another cache (`other`, an
/// `override_global`, as a server's tests hold). The first call loads both into `tenant`.
/// Once `tenant_outer`'s entry is stale, its refresh runs in a task the library spawns, where
/// `with_cache`'s task-local is gone: the body's `tenant_inner` call reads and writes `other`
/// (with no default at all it runs uncached). One tenant's data lands in another's cache.
/// What happened: the refreshed `tenant_inner` entry is in `other`, not in `tenant`.
/// Cause: `read/detach.rs` (`spawn`): the task does not carry the caller's `with_cache` scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_background_refresh_runs_in_its_callers_with_cache() {
    let server = RedisServer::start();
    let tenant = server.cache("adv-bg-tenant").await;
    let other = server.cache("adv-bg-other").await;
    // Process-wide; the other tests of this file name their cache (`cache = cache`).
    let _default = override_global(other.clone());
    assert_eq!(with_cache(tenant.clone(), tenant_outer(1)).await, Ok(100));
    tenant.settle().await;
    let inner_key = tenant_inner_key(1);
    let mut conn = server.conn().await;
    assert!(
        get_raw(&mut conn, &tenant.redis_key(&inner_key))
            .await
            .is_some()
    );
    // The inner row changes: its entry goes (in the tenant's cache, where it is).
    assert!(
        with_cache(tenant.clone(), invalidate_tenant_inner(1))
            .await
            .unwrap()
    );
    age(
        &server,
        &[&tenant],
        &tenant.redis_key(&tenant_outer_key(1)),
        STALE_LEFT_MS,
    )
    .await;
    assert_eq!(
        within(
            "the stale call",
            with_cache(tenant.clone(), tenant_outer(1))
        )
        .await,
        Ok(100),
        "stale, at once"
    );
    within("the refresh", tenant.settle()).await;
    within("other's write-backs", other.settle()).await;
    assert_eq!(TENANT_INNER_LOADS.load(Ordering::SeqCst), 2, "reloaded");
    let in_tenant = get_raw(&mut conn, &tenant.redis_key(&inner_key)).await;
    let in_other = get_raw(&mut conn, &other.redis_key(&inner_key)).await;
    assert!(
        in_other.is_none() && in_tenant.is_some(),
        "the refresh's nested call went to the process default: in `tenant`: {:?}, in \
         `other`: {:?}",
        in_tenant.map(|b| String::from_utf8_lossy(&b).into_owned()),
        in_other.map(|b| String::from_utf8_lossy(&b).into_owned()),
    );
}

// ---------------------------------------------------------------------------------------------
// 3. `settle` and a hung background load.

static HUNG_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(
    key = "hung:<id>",
    ttl = "60s",
    stale = "60s",
    lock_ttl = "300ms",
    max_load = "300ms",
    cache = cache,
    skip = "gate"
)]
async fn hung(cache: &Cache, gate: Gate, id: u64) -> Result<u64, String> {
    let n = u64::from(HUNG_LOADS.fetch_add(1, Ordering::SeqCst));
    if n > 0 {
        gate.passed().await;
    }
    Ok(id * 100 + n)
}

/// Found (failed on 13d28f8; fixed: a background refresh is dropped at `max_load` plus
/// `op_timeout`, when nothing it loads can be stored). Guarantee attacked: the guarantees
/// page, "A loader that hangs keeps the lease at most
/// `max_load`: then the lease is released, waiters here and in other processes load for
/// themselves, and the hung caller ... gets its own result when its loader returns, not
/// stored"; "Cancellation and panics leave nobody hanging"; `Cache::settle` is what a
/// program calls at shutdown.
///
/// A background refresh whose load hangs (a database that never answers) lets its lease go
/// after `max_load` (300 ms): its result can no longer be stored, and no caller waits for it
/// (every caller was answered with the stale entry). Nothing cancels it: the next stale call
/// starts a second background load beside it (one more per `max_load` for as long as the
/// database hangs, each holding a connection). And `settle()` waits for all of them, without
/// bound: a shutdown that settles hangs for as long as the database query does. (A hung load
/// in a caller, without the background, does not hold `settle` up, and goes when its caller's
/// request is cancelled.) What happened: `settle` had not returned 3 s after the first
/// lease was let go; once the loaders returned, their write-backs were refused. Cause:
/// `read/detach.rs` (`spawn`: the task runs `load_under` to the end) with
/// `read/write_backs.rs` (`settled` waits for every refresh counted by `spawn_refresh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_settle_does_not_wait_for_a_background_load_past_max_load() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder("adv-bg-hung")
        .op_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let gate = Gate::new();
    assert_eq!(hung(&cache, gate.clone(), 1).await, Ok(100));
    cache.settle().await;
    let redis_key = cache.redis_key(&hung_key(1));
    age(&server, &[&cache], &redis_key, STALE_LEFT_MS).await;
    assert_eq!(
        within("the stale call", hung(&cache, gate.clone(), 1)).await,
        Ok(100)
    );
    let loading = || async { HUNG_LOADS.load(Ordering::SeqCst) == 2 };
    assert!(eventually(Duration::from_secs(10), loading).await);
    // Past max_load, the lease is let go: whatever the load returns is not stored.
    assert!(
        no_lease_soon(&server, &redis_key).await,
        "the lease is let go after max_load"
    );
    // The next stale call takes the lease again and starts a second background load beside
    // the first, which nobody can use any more and nothing cancels.
    assert_eq!(
        within("the next stale call", hung(&cache, gate.clone(), 1)).await,
        Ok(100)
    );
    let second = || async { HUNG_LOADS.load(Ordering::SeqCst) == 3 };
    assert!(eventually(Duration::from_secs(10), second).await);
    let settled = tokio::time::timeout(Duration::from_secs(3), cache.settle())
        .await
        .is_ok();
    gate.open();
    within("settle once the loader returned", cache.settle()).await;
    let refused = cache.stats().stale_refused;
    assert!(
        settled,
        "settle() still waited 3 s after the first load's lease was let go, for loads no \
         caller waits for (their write-backs, once the loader returned: stale_refused = \
         {refused})"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. The expansion's `detachable` heuristic.

// Found (failed on 13d28f8): three functions that compile without `stale` failed to compile
// with it: an `impl Trait` argument named in the body (an anonymous type parameter the check
// did not see), the same with `+ Send + Sync` (E0310), and an associated function of a generic
// `impl` taking the impl's `T` (E0310 for `T`). `detachable` now takes an `impl` argument, and
// one that names a single-capital type parameter, as possibly borrowing; `background = false`
// keeps a refresh in the caller where the signature cannot tell (`ui/pass/stale_*.rs`).

// ---------------------------------------------------------------------------------------------
// 5. A background loader that panics.

static PANIC_NEXT: AtomicBool = AtomicBool::new(false);

#[redis_cached(key = "panicky:<id>", ttl = "60s", stale = "60s", cache = cache, skip = "db")]
async fn panicky(cache: &Cache, db: Db, id: u64) -> Result<u64, String> {
    let _ = id;
    let version = db.read().await?;
    if PANIC_NEXT.swap(false, Ordering::SeqCst) {
        panic!("the loader panics in the background (expected by the test)");
    }
    Ok(version)
}

/// HELD. Guarantee attacked: "Cancellation and panics leave nobody hanging ... a panicking
/// loader releases its lease at once through a drop guard, its local joiners take over, and
/// no flight, subscription or task is left behind".
///
/// A background refresh is held after reading the row; the entry is invalidated and a later
/// caller, finding nothing, joins the refresh's flight; then the loader panics in its task.
/// The joiner reads again and loads the new row itself, `settle` returns, the lease is gone
/// at once (not after `lock_ttl`), nothing is left in flight, and the next stale entry
/// refreshes normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_panicking_background_loader_leaves_nobody_hanging() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder("adv-bg-panic")
        .lock_ttl(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let db = db(1);
    assert_eq!(panicky(&cache, db.clone(), 1).await, Ok(1));
    cache.settle().await;
    let redis_key = cache.redis_key(&panicky_key(1));
    age(&server, &[&cache], &redis_key, STALE_LEFT_MS).await;
    db.set_version(2);
    PANIC_NEXT.store(true, Ordering::SeqCst);
    let read = db.hold_next_read();
    assert_eq!(
        within("the stale call", panicky(&cache, db.clone(), 1)).await,
        Ok(1)
    );
    within("the refresh's read", read).await;
    assert!(invalidate_panicky(&cache, 1).await.unwrap());
    let joiner = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { panicky(&cache, db, 1).await }
    });
    let joined = || async { cache.stats().coalesced == 1 };
    assert!(
        eventually(Duration::from_secs(10), joined).await,
        "the later caller joined the refresh's flight: {:?}",
        cache.stats()
    );
    db.release();
    assert_eq!(
        within("the joiner", joiner).await.unwrap(),
        Ok(2),
        "the joiner loads for itself"
    );
    within("settle after the panic", cache.settle()).await;
    assert!(
        no_lease_soon(&server, &redis_key).await,
        "the lease is left"
    );
    assert_no_state_left(&cache).await;
    // The next stale entry refreshes as usual.
    age(&server, &[&cache], &redis_key, STALE_LEFT_MS).await;
    db.set_version(3);
    assert_eq!(within("stale", panicky(&cache, db.clone(), 1)).await, Ok(2));
    within("settle", cache.settle()).await;
    assert_eq!(panicky(&cache, db.clone(), 1).await, Ok(3));
}

// ---------------------------------------------------------------------------------------------
// 6. Crafted soft expiries.

#[redis_cached(key = "crafted:<id>", ttl = "60s", stale = "60s", cache = cache, skip = "db")]
async fn crafted(cache: &Cache, db: Db, id: u64) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// HELD. Guarantees attacked: TTL ("the entry carries the end of its TTL (`exp`) ... clocks
/// that disagree by `d` move the end of the TTL by `d` (never past Redis's expiry, and never
/// more than `ttl` from now). An entry written by a build before `exp` was stored ends a full
/// `ttl` after its load (`at`)"), "Undecodable values are misses: logged, reloaded and
/// overwritten", and the rolling deploy ("unknown fields are ignored").
///
/// Each envelope below is written behind the cache's back, kept by Redis for 100 s, and read
/// once: no call errs or panics; `exp` 0 reads as absent (a TTL after `at`); `exp` at
/// `u64::MAX` is fresh (bounded by Redis's expiry, as documented); `exp` far in the past, an
/// entry of an older build loaded 90 s ago, and one with neither field are answered stale at
/// once and refreshed in the background; a field a newer build adds is ignored; a
/// non-number, negative, fractional, duplicated or over-`u64` `exp` is a decode error,
/// reloaded and overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_crafted_soft_expiries() {
    let server = RedisServer::start();
    let cache = server.cache("adv-bg-crafted").await;
    let mut conn = server.conn().await;
    let redis_key = cache.redis_key(&crafted_key(1));
    let now = unix_ms();
    #[derive(Debug, PartialEq)]
    enum Expect {
        Fresh,
        StaleThenRefreshed,
        Reloaded,
    }
    let cases = [
        (
            format!(r#""at":{now},"load_ms":1,"id":1,"exp":0"#),
            Expect::Fresh,
        ),
        (
            format!(r#""at":{now},"load_ms":1,"id":1,"exp":18446744073709551615"#),
            Expect::Fresh,
        ),
        (
            format!(r#""at":{now},"load_ms":1,"id":1,"exp":1"#),
            Expect::StaleThenRefreshed,
        ),
        (
            format!(r#""at":{},"load_ms":1,"id":1"#, now - 90_000),
            Expect::StaleThenRefreshed,
        ),
        (
            format!(r#""at":{},"load_ms":1,"id":1"#, now - 1_000),
            Expect::Fresh,
        ),
        (String::new(), Expect::StaleThenRefreshed),
        (
            format!(
                r#""at":{now},"load_ms":1,"id":1,"exp":{},"soft_v2":{{"x":1}}"#,
                now + 30_000
            ),
            Expect::Fresh,
        ),
        (
            format!(r#""at":{now},"load_ms":1,"id":1,"exp":"soon""#),
            Expect::Reloaded,
        ),
        (
            format!(r#""at":{now},"load_ms":1,"id":1,"exp":-1"#),
            Expect::Reloaded,
        ),
        (
            format!(r#""at":{now},"load_ms":1,"id":1,"exp":1.5e12"#),
            Expect::Reloaded,
        ),
        (
            format!(
                r#""at":{now},"load_ms":1,"id":1,"exp":{e},"exp":{e}"#,
                e = now + 30_000
            ),
            Expect::Reloaded,
        ),
        (
            format!(r#""at":{now},"load_ms":1,"id":1,"exp":99999999999999999999"#),
            Expect::Reloaded,
        ),
    ];
    let db = db(0);
    for (n, (fields, expect)) in cases.iter().enumerate() {
        let version = 100 + n as u64;
        db.set_version(version);
        let comma = if fields.is_empty() { "" } else { "," };
        let bytes = format!(r#"{{"v":7{comma}{fields}}}"#);
        let _: () = redis::cmd("SET")
            .arg(&redis_key)
            .arg(&bytes)
            .arg("PX")
            .arg(100_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        // In the near pass, the last case's copy goes with Redis's message for the SET.
        near_caught_up(&cache).await;
        let (reads, decode_errors) = (db.reads(), cache.stats().decode_errors);
        let answer = within("a crafted entry", crafted(&cache, db.clone(), 1)).await;
        within("settle", cache.settle()).await;
        let loaded = db.reads() - reads;
        let undecodable = cache.stats().decode_errors - decode_errors;
        let stored = envelope(&server, &redis_key).await.map(|e| e["v"].clone());
        let seen = match (answer.clone(), loaded, undecodable) {
            (Ok(7), 0, 0) if stored == Some(7.into()) => Some(Expect::Fresh),
            (Ok(7), 1, 0) if stored == Some(version.into()) => Some(Expect::StaleThenRefreshed),
            (Ok(v), 1, 1) if v == version && stored == Some(version.into()) => {
                Some(Expect::Reloaded)
            }
            _ => None,
        };
        assert_eq!(
            seen.as_ref(),
            Some(expect),
            "{bytes}: answered {answer:?}, {loaded} loads, {undecodable} decode errors, \
             stored {stored:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. MessagePack, zstd and the soft expiry.

#[redis_cached(
    key = "packed:<id>",
    ttl = "300ms",
    stale = "60s",
    codec = "msgpack",
    compress_above = "1KiB",
    cache = cache,
    skip = "db"
)]
async fn packed(cache: &Cache, db: Db, id: u64) -> Result<String, String> {
    let _ = id;
    db.read().await.map(|v| format!("row {v}; ").repeat(500))
}

/// HELD. Guarantees attacked: "a hit is one `GET`" and the soft expiry with the other codecs
/// ("Reading does not depend on it"): a MessagePack entry, zstd-compressed, of a function
/// with `stale`. Its `exp` is read from the compressed MessagePack envelope: a fresh hit is
/// one GET (no PTTL); once its 300 ms TTL is over (the one wait here is the TTL under test)
/// it is answered stale at once while the refresh, held, runs in the background; then the
/// refreshed value is served; Redis keeps the entry for TTL + stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_compressed_msgpack_entry_carries_its_soft_expiry() {
    let server = RedisServer::start();
    let cache = server.cache("adv-bg-packed").await;
    let mut conn = server.conn().await;
    let db = db(1);
    let first = "row 1; ".repeat(500);
    assert_eq!(packed(&cache, db.clone(), 1).await.as_deref(), Ok(&*first));
    cache.settle().await;
    let redis_key = cache.redis_key(&packed_key(1));
    let raw = get_raw(&mut conn, &redis_key).await.unwrap();
    assert_eq!(&raw[..4], [0x28, 0xb5, 0x2f, 0xfd], "zstd");
    assert!(raw.len() < 1_000, "compressed: {} bytes", raw.len());
    assert!(pttl(&mut conn, &redis_key).await > 59_000, "ttl + stale");
    let (gets, pttls) = (
        command_calls(&mut conn, "get").await,
        command_calls(&mut conn, "pttl").await,
    );
    assert_eq!(packed(&cache, db.clone(), 1).await.as_deref(), Ok(&*first));
    assert_eq!(command_calls(&mut conn, "get").await, gets + 1);
    // In the near pass a read that may keep a copy reads the entry's PTTL with it.
    let pttls_sent = command_calls(&mut conn, "pttl").await - pttls;
    assert!(pttls_sent <= u64::from(near_pass()), "{pttls_sent} PTTLs");

    tokio::time::sleep(Duration::from_millis(400)).await;
    db.set_version(2);
    let read = db.hold_next_read();
    assert_eq!(
        within("the stale call", packed(&cache, db.clone(), 1))
            .await
            .as_deref(),
        Ok(&*first),
        "stale, at once"
    );
    within("the refresh's read", read).await;
    assert_eq!(cache.stats().stale_served, 1, "{:?}", cache.stats());
    db.release();
    within("settle", cache.settle()).await;
    assert_eq!(
        packed(&cache, db.clone(), 1).await,
        Ok("row 2; ".repeat(500))
    );
}

// ---------------------------------------------------------------------------------------------
// 8. `back_off` after a failed background refresh.

#[redis_cached(
    key = "flaky:<id>",
    ttl = "60s",
    stale = "10s",
    fail_safe = "60s",
    back_off = "5s",
    cache = cache,
    skip = "db"
)]
async fn flaky(cache: &Cache, db: Db, id: u64) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// HELD. Guarantee attacked: `back_off` ("how long a key whose load failed is answered with
/// its entry without loading, in this process") when the failed load is a background
/// refresh's, which answers nobody: the task itself must back the key off. 5 s past its TTL
/// (stale, within `fail_safe`), the refresh fails in the background; then 20 calls in the
/// stale window and 20 past `stale` (within `fail_safe`) are all answered with the entry, and
/// none reads the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_failed_background_refresh_backs_the_key_off() {
    let server = RedisServer::start();
    let cache = server.cache("adv-bg-flaky").await;
    let db = db(1);
    assert_eq!(flaky(&cache, db.clone(), 1).await, Ok(1));
    cache.settle().await;
    let redis_key = cache.redis_key(&flaky_key(1));
    // Redis keeps it TTL + 60 s: 55 s left is 5 s past the TTL.
    age(&server, &[&cache], &redis_key, 55_000).await;
    db.fail(true);
    assert_eq!(within("stale", flaky(&cache, db.clone(), 1)).await, Ok(1));
    within("settle", cache.settle()).await;
    assert_eq!(db.reads(), 2, "the background refresh tried");
    for _ in 0..20 {
        assert_eq!(flaky(&cache, db.clone(), 1).await, Ok(1));
    }
    // 30 s past the TTL: past stale, within fail_safe.
    age(&server, &[&cache], &redis_key, 30_000).await;
    for _ in 0..20 {
        assert_eq!(flaky(&cache, db.clone(), 1).await, Ok(1));
    }
    within("settle", cache.settle()).await;
    assert_eq!(
        db.reads(),
        2,
        "loaded while backed off: {:?}",
        cache.stats()
    );
    assert_eq!(cache.stats().fail_safe_served, 20, "{:?}", cache.stats());
}

// ---------------------------------------------------------------------------------------------
// 9. Redis refusing writes, and paused, mid background refresh.

#[redis_cached(key = "steady:<id>", ttl = "60s", stale = "60s", cache = cache, skip = "db")]
async fn steady(cache: &Cache, db: Db, id: u64) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// HELD. Guarantees attacked: "Redis trouble never becomes your error", "A write pause or a
/// Redis refusing writes is an outage of the write path only: hits go on", and `stale`'s
/// "the rest answered at once". Redis starts refusing writes (`maxmemory 1`, `noeviction`)
/// while a background refresh loads: its write-back is refused, `settle` returns; 50
/// concurrent callers are then answered with the stale entry at once, none loads; once Redis
/// takes writes again, the next refresh stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_writes_refused_mid_background_refresh() {
    let server = RedisServer::start();
    let cache = server.cache("adv-bg-oom").await;
    let mut conn = server.conn().await;
    let db = db(1);
    assert_eq!(steady(&cache, db.clone(), 1).await, Ok(1));
    cache.settle().await;
    let redis_key = cache.redis_key(&steady_key(1));
    age(&server, &[&cache], &redis_key, STALE_LEFT_MS).await;
    let read = db.hold_next_read();
    assert_eq!(within("stale", steady(&cache, db.clone(), 1)).await, Ok(1));
    within("the refresh's read", read).await;
    config_set(&mut conn, "maxmemory-policy", "noeviction").await;
    config_set(&mut conn, "maxmemory", "1").await;
    db.set_version(2);
    db.release();
    within("settle with writes refused", cache.settle()).await;
    assert_eq!(db.reads(), 2);
    let mut calls = Vec::new();
    for _ in 0..50 {
        let (cache, db) = (cache.clone(), db.clone());
        calls.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(3), steady(&cache, db, 1)).await
        }));
    }
    for call in calls {
        let answer = call.await.unwrap().expect("answered at once");
        assert_eq!(answer, Ok(1), "the stale entry");
    }
    assert_eq!(db.reads(), 2, "nobody loaded: {:?}", cache.stats());
    config_set(&mut conn, "maxmemory", "0").await;
    let stored = eventually(Duration::from_secs(15), || async {
        let _ = steady(&cache, db.clone(), 1).await;
        cache.settle().await;
        envelope(&server, &redis_key).await.map(|e| e["v"].clone()) == Some(2.into())
    })
    .await;
    assert!(stored, "refreshed once writes were taken again");
    assert_eq!(steady(&cache, db.clone(), 1).await, Ok(2));
}

/// HELD. Guarantee attacked: "Redis trouble never becomes your error: refused, paused,
/// black-holed or restarted, every call returns ... within `op_timeout`", for a background
/// refresh: Redis is paused (SIGSTOP) while the refresh loads; the write-back gives up within
/// `op_timeout` and `settle` returns; resumed, the entry ends up refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_redis_paused_mid_background_refresh() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder("adv-bg-paused")
        .op_timeout(Duration::from_millis(500))
        .lock_ttl(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let db = db(1);
    assert_eq!(steady(&cache, db.clone(), 1).await, Ok(1));
    cache.settle().await;
    let redis_key = cache.redis_key(&steady_key(1));
    age(&server, &[&cache], &redis_key, STALE_LEFT_MS).await;
    // The refresh reads version 2 and is held before it returns.
    db.set_version(2);
    let read = db.hold_next_read();
    assert_eq!(within("stale", steady(&cache, db.clone(), 1)).await, Ok(1));
    within("the refresh's read", read).await;
    server.pause();
    db.release();
    let settled = tokio::time::timeout(Duration::from_secs(3), cache.settle()).await;
    server.resume();
    assert!(settled.is_ok(), "settle bounded by op_timeout while paused");
    let stored = eventually(Duration::from_secs(15), || async {
        let answer = steady(&cache, db.clone(), 1).await;
        cache.settle().await;
        answer == Ok(2)
    })
    .await;
    assert!(stored, "refreshed after the pause: {:?}", cache.stats());
}

// ---------------------------------------------------------------------------------------------
// 10. Bulk removals in the refreshing process.

#[redis_cached(key = "shelf:<id>", ttl = "60s", stale = "60s", cache = cache, skip = "db")]
async fn shelf(cache: &Cache, db: Db, id: u64) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// HELD. Guarantee attacked: "`invalidate_prefix`, `invalidate_all_<fn>` and `clear()` are
/// race-free ... After either returns `Ok`, no read of a matching entry returns a value loaded
/// before the call began", against a background refresh of the same process that read the row
/// before the write. For each removal: a caller that begins after it returned finds nothing,
/// joins the refresh's flight, and is not handed the refresh's value: it reads again and loads
/// the new row, which is what stays cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_bulk_removals_overtake_a_background_refresh_of_their_process() {
    let server = RedisServer::start();
    let cache = server.cache("adv-bg-bulk").await;
    let redis_key = cache.redis_key(&shelf_key(1));
    assert_eq!(shelf(&cache, db(1), 1).await, Ok(1));
    cache.settle().await;
    for removal in ["invalidate_all", "invalidate_prefix", "clear"] {
        // A row of its own each round: a `HeldDb` holds one read.
        let db = db(0);
        let cached = shelf(&cache, db.clone(), 1).await.unwrap();
        db.set_version(cached);
        age(&server, &[&cache], &redis_key, STALE_LEFT_MS).await;
        let read = db.hold_next_read();
        assert_eq!(
            within("stale", shelf(&cache, db.clone(), 1)).await,
            Ok(cached)
        );
        within("the refresh's read", read).await;
        let new = cached + 10;
        db.set_version(new);
        match removal {
            "invalidate_all" => {
                invalidate_all_shelf(&cache).await.unwrap();
            }
            "invalidate_prefix" => {
                cache.invalidate_prefix("shelf:").await.unwrap();
            }
            _ => {
                cache.clear().await.unwrap();
            }
        }
        let coalesced = cache.stats().coalesced;
        let reader = tokio::spawn({
            let (cache, db) = (cache.clone(), db.clone());
            async move { shelf(&cache, db, 1).await }
        });
        let joined = || async { cache.stats().coalesced == coalesced + 1 };
        assert!(
            eventually(Duration::from_secs(10), joined).await,
            "{removal}: the reader joined the refresh's flight"
        );
        db.release();
        assert_eq!(
            within("the reader", reader).await.unwrap(),
            Ok(new),
            "{removal}: a read after it got the refresh's value"
        );
        within("settle", cache.settle()).await;
        assert_eq!(
            envelope(&server, &redis_key).await.map(|e| e["v"].clone()),
            Some(new.into()),
            "{removal}"
        );
    }
    assert_eq!(cache.stats().stale_refused, 3, "{:?}", cache.stats());
}

// ---------------------------------------------------------------------------------------------
// 11. `update_*` of an entry that carries its soft expiry.

/// HELD. Guarantees attacked: "An update ... rewrites `v`, keeps `at`, `load_ms`, `id` ...
/// and `exp`" and "keeps the entry's remaining TTL": an update must neither make a stale entry
/// fresh again (it would stop its refresh) nor end a fresh one. After `update_shelf` the
/// envelope keeps `exp` and `at`, gains a `rev`, and Redis's TTL is kept; the updated entry is
/// a fresh hit; aged past its TTL it is answered stale and refreshed in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_an_update_keeps_the_soft_expiry() {
    let server = RedisServer::start();
    let cache = server.cache("adv-bg-update-exp").await;
    let mut conn = server.conn().await;
    let redis_key = cache.redis_key(&shelf_key(7));
    let db = db(1);
    assert_eq!(shelf(&cache, db.clone(), 7).await, Ok(1));
    cache.settle().await;
    let before = envelope(&server, &redis_key).await.unwrap();
    let kept_before = pttl(&mut conn, &redis_key).await;
    db.set_version(2);
    assert!(update_shelf(&cache, 7, |v: &mut u64| *v = 2).await.unwrap());
    let after = envelope(&server, &redis_key).await.unwrap();
    assert_eq!(after["v"], 2);
    assert_eq!(
        (&after["exp"], &after["at"]),
        (&before["exp"], &before["at"])
    );
    assert!(after["rev"].is_u64(), "{after}");
    let kept_after = pttl(&mut conn, &redis_key).await;
    assert!(
        kept_after <= kept_before && kept_after > 100_000,
        "{kept_before} then {kept_after}"
    );
    let reads = db.reads();
    assert_eq!(shelf(&cache, db.clone(), 7).await, Ok(2));
    assert_eq!(db.reads(), reads, "a fresh hit");
    age(&server, &[&cache], &redis_key, STALE_LEFT_MS).await;
    db.set_version(3);
    assert_eq!(within("stale", shelf(&cache, db.clone(), 7)).await, Ok(2));
    within("settle", cache.settle()).await;
    assert_eq!(shelf(&cache, db.clone(), 7).await, Ok(3));
}

// ---------------------------------------------------------------------------------------------
// 12. The caller cancelled at every await.

/// HELD. Guarantees attacked: "Cancellation and panics leave nobody hanging" and the
/// background refresh "outlives a cancelled caller". The caller of a stale entry of a
/// function that refreshes in the background is dropped after 1, 2, 3 ... polls (during its
/// GET, its lease script, after): every time, `settle` returns, no lease or flight is left,
/// and a later call refreshes the entry to the current row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_caller_cancelled_at_any_await() {
    let server = RedisServer::start();
    let cache = server.cache("adv-bg-cancel").await;
    let redis_key = cache.redis_key(&steady_key(9));
    let db = db(1);
    assert_eq!(steady(&cache, db.clone(), 9).await, Ok(1));
    cache.settle().await;
    let mut finished_in_a_row = 0;
    for polls in 1..40 {
        let version = 1 + polls as u64;
        age(&server, &[&cache], &redis_key, STALE_LEFT_MS).await;
        db.set_version(version);
        let call = CancelAfter::new(steady(&cache, db.clone(), 9), polls);
        let answered = within("a cancelled call", call).await;
        within("settle", cache.settle()).await;
        assert_no_state_left(&cache).await;
        assert!(
            no_lease_soon(&server, &redis_key).await,
            "dropped after {polls} polls: the lease is left"
        );
        age(&server, &[&cache], &redis_key, STALE_LEFT_MS).await;
        let _ = within("the next call", steady(&cache, db.clone(), 9)).await;
        within("settle", cache.settle()).await;
        assert_eq!(
            steady(&cache, db.clone(), 9).await,
            Ok(version),
            "dropped after {polls} polls"
        );
        if answered.is_some() {
            finished_in_a_row += 1;
            if finished_in_a_row == 3 {
                return;
            }
        } else {
            finished_in_a_row = 0;
        }
    }
    panic!("the call never finished within 40 polls");
}
