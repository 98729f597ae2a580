//! The in-memory cache (`Cache::in_memory`, `Cache::builder("mem://")`): the engine's
//! semantics with process memory as the store and no Redis anywhere: hits, errors never
//! cached, `None` only with `none_ttl`, one load per key, TTL and jitter, invalidation that
//! refuses a racing load's store, updates in place, families, prefixes, `clear`, a bound on
//! entries, stats and `ping`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cached_redis::{Cache, Key, redis_cached};
use cached_redis_tests::HeldDb;

#[redis_cached(key = "row:<id>", ttl = "60s", cache = cache)]
async fn row(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

#[redis_cached(key = "page:<n>", ttl = "60s", cache = cache)]
async fn page(cache: &Cache, db: &HeldDb, n: u32) -> Result<u64, String> {
    let _ = n;
    db.read().await
}

static OPTIONAL_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "maybe:<id>", ttl = "60s", cache = cache)]
async fn maybe(cache: &Cache, id: u32) -> Option<u32> {
    OPTIONAL_LOADS.fetch_add(1, Ordering::SeqCst);
    id.is_multiple_of(2).then_some(id)
}

static NONE_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "absent:<id>", ttl = "60s", none_ttl = "60s", cache = cache)]
async fn absent(cache: &Cache, id: u32) -> Option<u32> {
    let _ = id;
    NONE_LOADS.fetch_add(1, Ordering::SeqCst);
    None
}

#[redis_cached(key = "short:<id>", ttl = "400ms", jitter = "100ms", cache = cache)]
async fn short(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_after_one_load_and_errors_are_never_cached() {
    let cache = Cache::in_memory(100);
    let db = HeldDb::new(1);
    assert_eq!(row(&cache, &db, 1).await, Ok(1));
    assert_eq!(row(&cache, &db, 1).await, Ok(1));
    assert_eq!(db.reads(), 1);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.loads), (1, 1, 1));

    db.fail(true);
    assert!(row(&cache, &db, 2).await.is_err());
    db.fail(false);
    assert_eq!(row(&cache, &db, 2).await, Ok(1), "the error was not kept");
    assert_eq!(db.reads(), 3);
    assert!(cache.ping().await.is_ok());
    assert!(!cache.is_disabled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_is_cached_only_with_none_ttl() {
    let cache = Cache::builder("mem://").build().await.unwrap();
    assert_eq!(maybe(&cache, 1).await, None);
    assert_eq!(maybe(&cache, 1).await, None);
    assert_eq!(
        OPTIONAL_LOADS.load(Ordering::SeqCst),
        2,
        "None is not cached"
    );
    assert_eq!(maybe(&cache, 2).await, Some(2));
    assert_eq!(maybe(&cache, 2).await, Some(2));
    assert_eq!(OPTIONAL_LOADS.load(Ordering::SeqCst), 3);
    assert_eq!(absent(&cache, 1).await, None);
    assert_eq!(absent(&cache, 1).await, None);
    assert_eq!(NONE_LOADS.load(Ordering::SeqCst), 1, "with none_ttl it is");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_load() {
    let cache = Cache::in_memory(100);
    let db = Arc::new(HeldDb::new(7));
    let started = db.hold_next_read();
    let first = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { row(&cache, &db, 1).await }
    });
    started.await;
    let others: Vec<_> = (0..50)
        .map(|_| {
            let (cache, db) = (cache.clone(), db.clone());
            tokio::spawn(async move { row(&cache, &db, 1).await })
        })
        .collect();
    // Every other caller has joined the load before it ends.
    let joined = cached_redis_tests::eventually(Duration::from_secs(5), || async {
        cache.stats().coalesced == 50
    })
    .await;
    assert!(joined);
    db.release();
    assert_eq!(first.await.unwrap(), Ok(7));
    for other in others {
        assert_eq!(other.await.unwrap(), Ok(7));
    }
    assert_eq!(db.reads(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_live_their_jittered_ttl_then_load_again() {
    let cache = Cache::in_memory(100);
    let db = HeldDb::new(1);
    assert_eq!(short(&cache, &db, 1).await, Ok(1));
    let key = Key::builder().text("short:").part(&1u32).build();
    let left = cache.ttl(&key).await.unwrap().expect("cached");
    assert!(
        left > Duration::from_millis(250) && left <= Duration::from_millis(400),
        "{left:?} outside [300ms, 400ms]"
    );
    db.set_version(2);
    assert_eq!(short(&cache, &db, 1).await, Ok(1));
    // The expiry is what is tested: wait it out.
    tokio::time::sleep(left + Duration::from_millis(5)).await;
    assert_eq!(short(&cache, &db, 1).await, Ok(2));
    assert_eq!(cache.ttl(&Key::raw("nothing")).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_refuses_the_load_it_raced() {
    let cache = Cache::in_memory(100);
    let db = Arc::new(HeldDb::new(1));
    let started = db.hold_next_read();
    let stale = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { row(&cache, &db, 1).await }
    });
    started.await; // read version 1
    db.set_version(2);
    assert!(
        !invalidate_row(&cache, 1).await.unwrap(),
        "nothing stored yet"
    );
    db.release();
    assert_eq!(stale.await.unwrap(), Ok(1), "its own caller asked first");
    assert_eq!(
        row(&cache, &db, 1).await,
        Ok(2),
        "the raced load was not stored"
    );
    assert_eq!(cache.stats().stale_refused, 1);
    assert!(invalidate_row(&cache, 1).await.unwrap());
    assert_eq!(db.reads(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_change_the_entry_in_place() {
    let cache = Cache::in_memory(100);
    let db = HeldDb::new(1);
    assert!(
        !update_row(&cache, 1, |v: &mut u64| *v = 5).await.unwrap(),
        "no entry"
    );
    assert_eq!(row(&cache, &db, 1).await, Ok(1));
    assert!(update_row(&cache, 1, |v: &mut u64| *v = 5).await.unwrap());
    assert_eq!(
        row(&cache, &db, 1).await,
        Ok(5),
        "a hit on the updated value"
    );
    assert_eq!(db.reads(), 1);
    let key = Key::builder().text("row:").part(&1u32).build();
    assert!(cache.ttl(&key).await.unwrap().unwrap() > Duration::from_secs(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_prefixes_and_clear_remove_what_they_name() {
    let cache = Cache::in_memory(1_000);
    let db = HeldDb::new(1);
    for n in 0..5 {
        assert_eq!(page(&cache, &db, n).await, Ok(1));
        assert_eq!(row(&cache, &db, n).await, Ok(1));
    }
    db.set_version(2);
    assert_eq!(invalidate_all_page(&cache).await.unwrap(), 5);
    assert_eq!(page(&cache, &db, 3).await, Ok(2), "the family went");
    assert_eq!(row(&cache, &db, 3).await, Ok(1), "another template stayed");
    assert_eq!(cache.invalidate_prefix("row:").await.unwrap(), 5);
    assert_eq!(row(&cache, &db, 3).await, Ok(2));
    db.set_version(3);
    assert!(cache.clear().await.unwrap() >= 2);
    assert_eq!(row(&cache, &db, 3).await, Ok(3));
    assert_eq!(page(&cache, &db, 3).await, Ok(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_number_of_entries_is_bounded() {
    let cache = Cache::in_memory(10);
    let db = HeldDb::new(1);
    for id in 0..200 {
        assert_eq!(row(&cache, &db, id).await, Ok(1));
    }
    let hits = cache.stats().hits;
    for id in 0..200 {
        assert_eq!(row(&cache, &db, id).await, Ok(1));
    }
    let kept = cache.stats().hits - hits;
    assert!(kept <= 20, "{kept} of 200 entries kept with room for 10");
}
