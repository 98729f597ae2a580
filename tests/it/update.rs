//! `update_<fn>` changes a cached value in place: a compare-and-set that loses no concurrent
//! change, keeps the entry's TTL, never creates an entry, and never writes over an
//! invalidation or a newer load.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use cached_redis::{Cache, redis_cached};
use cached_redis_tests::{RedisServer, assert_no_state_left, get_raw, pttl};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Product {
    id: u32,
    stock: i64,
}

/// One row's stock, as the database holds it, and how often it was read.
#[derive(Debug, Default)]
struct Db {
    stock: AtomicI64,
    reads: AtomicU32,
}

#[redis_cached(key = "product:<id>", ttl = "60s", cache = cache)]
async fn product(cache: &Cache, db: &Db, id: u32) -> Result<Product, String> {
    db.reads.fetch_add(1, Ordering::SeqCst);
    Ok(Product {
        id,
        stock: db.stock.load(Ordering::SeqCst),
    })
}

/// What is cached for `product(id)`, decoded.
async fn cached_stock(server: &RedisServer, cache: &Cache, id: u32) -> Option<i64> {
    cache.settle().await;
    let mut conn = server.conn().await;
    let bytes = get_raw(&mut conn, &cache.redis_key(&product_key(id))).await?;
    let stored: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    stored["v"]["stock"].as_i64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_changes_the_cached_value_and_keeps_its_ttl() {
    let server = RedisServer::start();
    let cache = server.cache("update-ttl").await;
    let db = Db::default();
    db.stock.store(10, Ordering::SeqCst);
    assert_eq!(product(&cache, &db, 1).await.unwrap().stock, 10);
    // The miss's write-back runs after its caller returns: the entry is shortened after it.
    cache.settle().await;
    let mut conn = server.conn().await;
    let redis_key = cache.redis_key(&product_key(1));
    let _: () = redis::cmd("PEXPIRE")
        .arg(&redis_key)
        .arg(30_000)
        .query_async(&mut conn)
        .await
        .unwrap();

    db.stock.store(9, Ordering::SeqCst);
    let changed = update_product(&cache, 1, |p| p.stock -= 1).await.unwrap();
    assert!(changed);
    assert_eq!(product(&cache, &db, 1).await.unwrap().stock, 9);
    assert_eq!(db.reads.load(Ordering::SeqCst), 1, "read from the cache");
    let left = pttl(&mut conn, &redis_key).await;
    assert!(
        (20_000..=30_000).contains(&left),
        "the entry keeps its remaining TTL, not a new one: {left} ms"
    );
    assert_no_state_left(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_created_and_a_load_in_flight_is_revoked() {
    let server = RedisServer::start();
    let cache = server.cache("update-absent").await;
    let db = Arc::new(Db::default());
    let mut calls = 0;
    let changed = update_product(&cache, 2, |_| calls += 1).await.unwrap();
    assert!(!changed && calls == 0, "nothing cached, nothing changed");
    assert_eq!(
        cached_stock(&server, &cache, 2).await,
        None,
        "nothing created"
    );

    // A load that read the row before a write is still in flight when the write's update
    // runs: its value misses the write, so it must not be stored.
    let (read, hold) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let loading = tokio::spawn({
        let (cache, db, read, hold) = (cache.clone(), db.clone(), read.clone(), hold.clone());
        async move { held_product(&cache, &db, 2, &read, &hold).await }
    });
    read.notified().await;
    db.stock.store(5, Ordering::SeqCst);
    assert!(!update_product(&cache, 2, |p| p.stock = 5).await.unwrap());
    hold.notify_one();
    assert_eq!(
        loading.await.unwrap().unwrap().stock,
        0,
        "its caller gets its own read"
    );
    assert_eq!(
        cached_stock(&server, &cache, 2).await,
        None,
        "the revoked load's value is not stored"
    );
    assert_eq!(product(&cache, &db, 2).await.unwrap().stock, 5);
    assert_no_state_left(&cache).await;
}

/// `product`, with the load held after it read the row until `hold` is notified.
#[redis_cached(key = "product:<id>", ttl = "60s", cache = cache)]
async fn held_product(
    cache: &Cache,
    db: &Db,
    id: u32,
    read: &tokio::sync::Notify,
    hold: &tokio::sync::Notify,
) -> Result<Product, String> {
    let stock = db.stock.load(Ordering::SeqCst);
    read.notify_one();
    hold.notified().await;
    Ok(Product { id, stock })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_increments_from_two_processes_lose_none() {
    let server = RedisServer::start();
    // Two caches are two processes: their own connections and their own update queues, so
    // their updates conflict in Redis.
    let caches = [
        server.cache("update-race").await,
        server.cache("update-race").await,
    ];
    let db = Db::default();
    product(&caches[0], &db, 3).await.unwrap();
    caches[0].settle().await;
    let updates = (0..100).map(|i| {
        let cache = caches[i % 2].clone();
        tokio::spawn(async move { update_product(&cache, 3, |p| p.stock += 1).await })
    });
    for update in updates.collect::<Vec<_>>() {
        assert!(update.await.unwrap().unwrap(), "every increment applies");
    }
    assert_eq!(cached_stock(&server, &caches[0], 3).await, Some(100));
    for cache in &caches {
        assert_no_state_left(cache).await;
    }
}

/// Runs an update whose change, the first time it runs, stops until the test has done
/// `meanwhile`; returns the update's result and how often the change ran.
async fn update_interrupted<F>(cache: &Cache, id: u32, meanwhile: F) -> (bool, u32)
where
    F: std::future::Future<Output = ()>,
{
    let (reached, wait_for_test) = (mpsc::channel::<()>(), mpsc::channel::<()>());
    let (to_test, from_update) = reached;
    let (to_update, from_test) = wait_for_test;
    let runs = Arc::new(AtomicU32::new(0));
    let update = tokio::spawn({
        let (cache, runs) = (cache.clone(), runs.clone());
        async move {
            update_product(&cache, id, move |p| {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    to_test.send(()).unwrap();
                    // Blocking here must not hold up the tasks queued on this worker.
                    tokio::task::block_in_place(|| from_test.recv().unwrap());
                }
                p.stock -= 1;
            })
            .await
        }
    });
    tokio::task::spawn_blocking(move || from_update.recv().unwrap())
        .await
        .unwrap();
    meanwhile.await;
    to_update.send(()).unwrap();
    let changed = update.await.unwrap().unwrap();
    (changed, runs.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_racing_an_invalidation_never_resurrects_the_entry() {
    let server = RedisServer::start();
    let cache = server.cache("update-invalidated").await;
    let db = Db::default();
    db.stock.store(10, Ordering::SeqCst);
    product(&cache, &db, 4).await.unwrap();
    let (changed, _) = update_interrupted(&cache, 4, async {
        assert!(invalidate_product(&cache, 4).await.unwrap());
    })
    .await;
    assert!(!changed, "refused");
    assert_eq!(
        cached_stock(&server, &cache, 4).await,
        None,
        "still invalidated"
    );
    assert_no_state_left(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_leaves_a_newer_load_alone() {
    let server = RedisServer::start();
    let cache = server.cache("update-reloaded").await;
    let db = Db::default();
    db.stock.store(10, Ordering::SeqCst);
    product(&cache, &db, 5).await.unwrap();
    // The write this update follows is in the database; a reload after it already has it.
    db.stock.store(9, Ordering::SeqCst);
    let (changed, runs) = update_interrupted(&cache, 5, async {
        invalidate_product(&cache, 5).await.unwrap();
        assert_eq!(product(&cache, &db, 5).await.unwrap().stock, 9);
    })
    .await;
    assert!(
        !changed && runs == 1,
        "not applied again to the reloaded value"
    );
    assert_eq!(
        cached_stock(&server, &cache, 5).await,
        Some(9),
        "the reload stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_lost_a_race_to_another_update_applies_its_change_again() {
    let server = RedisServer::start();
    let cache = server.cache("update-conflict").await;
    let other_process = server.cache("update-conflict").await;
    let db = Db::default();
    db.stock.store(10, Ordering::SeqCst);
    product(&cache, &db, 6).await.unwrap();
    let (changed, runs) = update_interrupted(&cache, 6, async {
        assert!(
            update_product(&other_process, 6, |p| p.stock += 100)
                .await
                .unwrap()
        );
    })
    .await;
    assert!(changed && runs == 2, "changed on the second try");
    assert_eq!(cached_stock(&server, &cache, 6).await, Some(109));
}

static OPTIONAL_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "maybe:<id>", ttl = "60s", none_ttl = "60s", cache = cache)]
async fn maybe(cache: &Cache, id: u32) -> Option<Product> {
    OPTIONAL_LOADS.fetch_add(1, Ordering::SeqCst);
    (id != 0).then_some(Product { id, stock: 1 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_option_updates_its_some_and_removes_a_cached_none() {
    let server = RedisServer::start();
    let cache = server.cache("update-option").await;
    maybe(&cache, 7).await;
    assert!(update_maybe(&cache, 7, |p| p.stock = 3).await.unwrap());
    assert_eq!(maybe(&cache, 7).await.unwrap().stock, 3);

    assert_eq!(maybe(&cache, 0).await, None);
    // The write-back runs after the call returns: read Redis once it is done.
    cache.settle().await;
    let mut conn = server.conn().await;
    let none_key = cache.redis_key(&maybe_key(0));
    assert!(
        get_raw(&mut conn, &none_key).await.is_some(),
        "a None is cached"
    );
    let changed = update_maybe(&cache, 0, |_| panic!("nothing to change"))
        .await
        .unwrap();
    assert!(!changed);
    assert_eq!(
        get_raw(&mut conn, &none_key).await,
        None,
        "a cached None may be stale after a write: it is removed"
    );
    assert_eq!(OPTIONAL_LOADS.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_value_that_does_not_decode_is_removed() {
    let server = RedisServer::start();
    let cache = server.cache("update-corrupt").await;
    let mut conn = server.conn().await;
    let redis_key = cache.redis_key(&product_key(8));
    let _: () = redis::cmd("SET")
        .arg(&redis_key)
        .arg("not json")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!update_product(&cache, 8, |p| p.stock += 1).await.unwrap());
    assert_eq!(get_raw(&mut conn, &redis_key).await, None);
    assert_eq!(cache.stats().decode_errors, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_an_update_says_so() {
    let mut server = RedisServer::start();
    let cache = server
        .cache_builder("update-down")
        .op_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    server.kill();
    let result = update_product(&cache, 9, |p| p.stock += 1).await;
    assert!(result.is_err(), "{result:?}");
    assert_no_state_left(&cache).await;
}

/// A derived key (no `key = ...`), free and as a method: `update_*` must find the entry the
/// function stored, though the helper has type parameters of its own.
#[redis_cached(ttl = "60s", cache = cache)]
async fn derived_product(cache: &Cache, id: u32) -> Result<Product, String> {
    Ok(Product { id, stock: 1 })
}

struct Shop {
    cache: Cache,
}

impl Shop {
    #[redis_cached(ttl = "60s", cache = &self.cache)]
    async fn item(&self, id: u32) -> Result<Product, String> {
        Ok(Product { id, stock: 1 })
    }
}

/// A generic one: its path holds its type argument (`generic_product<u32>`).
#[redis_cached(ttl = "60s", cache = cache)]
async fn generic_product<I: cached_redis::KeyPart + Into<u64> + Copy>(
    cache: &Cache,
    id: I,
) -> Result<Product, String> {
    Ok(Product {
        id: id.into() as u32,
        stock: 1,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_finds_entries_under_derived_keys() {
    let server = RedisServer::start();
    let cache = server.cache("update-derived").await;
    derived_product(&cache, 1).await.unwrap();
    assert!(
        update_derived_product(&cache, 1, |p| p.stock = 5)
            .await
            .unwrap()
    );
    assert_eq!(derived_product(&cache, 1).await.unwrap().stock, 5);
    let shop = Shop {
        cache: cache.clone(),
    };
    shop.item(2).await.unwrap();
    assert!(shop.update_item(2, |p| p.stock = 7).await.unwrap());
    assert_eq!(shop.item(2).await.unwrap().stock, 7);
    generic_product(&cache, 3u32).await.unwrap();
    assert!(
        update_generic_product(&cache, 3u32, |p| p.stock = 9)
            .await
            .unwrap()
    );
    assert!(
        !update_generic_product(&cache, 3u16, |p| p.stock = 9)
            .await
            .unwrap(),
        "another instance"
    );
    assert_eq!(generic_product(&cache, 3u32).await.unwrap().stock, 9);
}

#[redis_cached(key = "found:<id>", ttl = "60s", none_ttl = "60s", cache = cache)]
async fn find(cache: &Cache, id: u32) -> Result<Option<Product>, String> {
    Ok((id != 0).then_some(Product { id, stock: 1 }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_ok_none_is_removed_and_a_change_to_none_is_not_stored() {
    let server = RedisServer::start();
    let cache = server.cache("update-found").await;
    let mut conn = server.conn().await;
    assert_eq!(find(&cache, 0).await, Ok(None));
    cache.settle().await;
    let none_key = cache.redis_key(&find_key(0));
    assert!(
        get_raw(&mut conn, &none_key).await.is_some(),
        "Ok(None) is cached"
    );
    let changed = update_find(&cache, 0, |_: &mut Product| {
        panic!("a None has nothing to change")
    })
    .await;
    assert!(!changed.unwrap());
    assert_eq!(
        get_raw(&mut conn, &none_key).await,
        None,
        "removed: it may be stale"
    );

    find(&cache, 1).await.unwrap();
    let to_none = update_find(&cache, 1, |p: &mut Option<Product>| *p = None);
    assert!(!to_none.await.unwrap());
    let key = cache.redis_key(&find_key(1));
    assert_eq!(
        get_raw(&mut conn, &key).await,
        None,
        "a change to None removes the entry"
    );
}

/// The closure a `fetch_optional` user writes: `&mut Product`, run on a cached `Ok(Some(_))`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_option_function_updates_with_the_rows_own_type() {
    let server = RedisServer::start();
    let cache = server.cache("update-found-row").await;
    find(&cache, 4).await.unwrap();
    let changed = update_find(&cache, 4, |p: &mut Product| p.stock = 7).await;
    assert!(changed.unwrap());
    assert_eq!(find(&cache, 4).await.unwrap().unwrap().stock, 7);
}

/// A rolling deploy: the newer build stores a field the older build's type does not have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PricedProduct {
    id: u32,
    stock: i64,
    #[serde(default)]
    price_cents: u64,
}

#[redis_cached(key = "product:<id>", ttl = "60s", cache = cache)]
async fn newer_build_product(cache: &Cache, db: &Db, id: u32) -> Result<PricedProduct, String> {
    db.reads.fetch_add(1, Ordering::SeqCst);
    let stock = db.stock.load(Ordering::SeqCst);
    Ok(PricedProduct {
        id,
        stock,
        price_cents: 999,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_builds_update_never_drops_a_field_it_cannot_see() {
    let server = RedisServer::start();
    let cache = server.cache("update-rolling").await;
    let db = Db::default();
    db.stock.store(5, Ordering::SeqCst);
    let newer = || newer_build_product(&cache, &db, 1);
    assert_eq!(newer().await.unwrap().price_cents, 999);
    // The older build's update_product decodes into `Product` (no `price_cents`).
    let changed = update_product(&cache, 1, |p| p.stock = 4).await.unwrap();
    assert!(!changed, "not rewritten without the field: removed instead");
    db.stock.store(4, Ordering::SeqCst);
    let read = newer().await.unwrap();
    assert_eq!((read.stock, read.price_cents), (4, 999));
    assert_eq!(
        db.reads.load(Ordering::SeqCst),
        2,
        "reloaded, not a lossy hit"
    );
    // The newer build's own update keeps every field.
    assert!(
        update_newer_build_product(&cache, 1, |p| p.stock = 3)
            .await
            .unwrap()
    );
    assert_eq!(
        newer().await.unwrap(),
        PricedProduct {
            id: 1,
            stock: 3,
            price_cents: 999
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_writes_refused_an_update_removes_the_entry() {
    let server = RedisServer::start();
    let cache = server.cache("update-oom").await;
    let db = Db::default();
    product(&cache, &db, 11).await.unwrap();
    // The entry is stored before Redis refuses writes.
    cache.settle().await;
    let mut conn = server.conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let changed = update_product(&cache, 11, |p| p.stock += 1).await;
    assert!(!changed.unwrap(), "the SET is refused, the DEL is not");
    assert_eq!(
        cached_stock(&server, &cache, 11).await,
        None,
        "no entry misses the change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_loads_now_and_stores_what_it_loaded() {
    let server = RedisServer::start();
    let cache = server.cache("refresh").await;
    let db = Arc::new(Db::default());
    db.stock.store(10, Ordering::SeqCst);
    product(&cache, &db, 12).await.unwrap();
    db.stock.store(9, Ordering::SeqCst);
    assert_eq!(
        refresh_product(&cache, &db, 12)
            .await
            .expect("no replicas asked for: never Err")
            .unwrap()
            .stock,
        9,
        "loaded, not read"
    );
    let reads = db.reads.load(Ordering::SeqCst);
    assert_eq!(product(&cache, &db, 12).await.unwrap().stock, 9);
    assert_eq!(
        db.reads.load(Ordering::SeqCst),
        reads,
        "and stored: the next read is a hit"
    );

    // A load in flight that read the row before the refresh does not store after it.
    let (read, hold) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    invalidate_product(&cache, 12).await.unwrap();
    let loading = tokio::spawn({
        let (cache, db, read, hold) = (cache.clone(), db.clone(), read.clone(), hold.clone());
        async move { held_product(&cache, &db, 12, &read, &hold).await }
    });
    read.notified().await;
    db.stock.store(8, Ordering::SeqCst);
    let refreshing = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { refresh_product(&cache, &db, 12).await }
    });
    // The refresh has revoked the held load's lease: let that load finish now.
    let lease = format!("{}:lease", cache.redis_key(&product_key(12)));
    let conn = server.conn().await;
    let revoked = cached_redis_tests::eventually(Duration::from_secs(10), || async {
        get_raw(&mut conn.clone(), &lease).await.is_none()
    });
    assert!(revoked.await);
    hold.notify_one();
    let own = loading.await.unwrap().unwrap();
    assert_eq!(own.stock, 9, "its caller gets its own read");
    assert_eq!(refreshing.await.unwrap().unwrap().unwrap().stock, 8);
    let cached = cached_stock(&server, &cache, 12).await;
    assert_eq!(cached, Some(8), "the refresh's value stays");
}

/// The caller's name starts with the helper's, and its closure's type is among the helper's
/// generic arguments: the helper must still find its own path segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_derived_product_from_a_caller_named_like_the_helper() {
    let server = RedisServer::start();
    let cache = server.cache("update-named").await;
    derived_product(&cache, 4).await.unwrap();
    assert!(
        update_derived_product(&cache, 4, |p| p.stock = 6)
            .await
            .unwrap()
    );
    assert_eq!(derived_product(&cache, 4).await.unwrap().stock, 6);
}
