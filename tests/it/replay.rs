//! Invalidations that survive an outage: an `invalidate_*`, `invalidate_all_*` or `update_*`
//! that Redis refused is kept, this process stops reading the entries it covers from Redis (it
//! loads them, storing nothing), and it is replayed once Redis takes writes again. Redis
//! refuses writes (below `min-replicas-to-write`) while it answers reads: the stale entry is
//! there to be served, by another process, until the replay; the time to the replay is printed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, KeyFamily, Policy};
use cached_redis_tests::{RedisServer, config_set, eventually, get_raw};

/// The database: one number per key.
#[derive(Default)]
struct Db(AtomicU64);

async fn read(cache: &Cache, db: &Arc<Db>, key: &Key) -> Result<u64, String> {
    let policy = Policy::new("replay", Duration::from_secs(60)).unwrap();
    let db = db.clone();
    cache
        .fetch(key, &policy, async move { Ok(db.0.load(Ordering::SeqCst)) })
        .await
}

/// Two processes' caches on one Redis, and `key` stored by the first with the value 1.
async fn two_with(server: &RedisServer, namespace: &str, keys: &[&Key]) -> (Cache, Cache, Arc<Db>) {
    let builder = || {
        server
            .cache_builder(namespace)
            .op_timeout(Duration::from_millis(500))
    };
    let (a, b) = (
        builder().build().await.unwrap(),
        builder().build().await.unwrap(),
    );
    let db = Arc::new(Db(AtomicU64::new(1)));
    for key in keys {
        assert_eq!(read(&a, &db, key).await, Ok(1));
    }
    a.settle().await;
    (a, b, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_invalidation_is_kept_honoured_here_and_replayed_when_redis_takes_writes() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let key = Key::raw("stock:1");
    let (a, b, db) = two_with(&server, "replay-one", &[&key]).await;
    assert_eq!(
        read(&b, &db, &key).await,
        Ok(1),
        "a hit in the other process"
    );

    db.0.store(2, Ordering::SeqCst);
    config_set(&mut admin, "min-replicas-to-write", "1").await;
    assert!(a.invalidate(&key).await.is_err(), "Redis refused it");
    assert_eq!(a.stats().invalidations_pending, 1);
    let hits = a.stats().hits;
    assert_eq!(
        read(&a, &db, &key).await,
        Ok(2),
        "this process does not serve the old entry"
    );
    assert_eq!(a.stats().hits, hits, "nor reads it");
    let stored = get_raw(&mut admin, &a.redis_key(&key)).await;
    assert!(stored.is_some(), "the old entry is still in Redis");
    assert_eq!(
        read(&b, &db, &key).await,
        Ok(1),
        "the other process still serves it"
    );

    config_set(&mut admin, "min-replicas-to-write", "0").await;
    let back = Instant::now();
    let replayed = eventually(Duration::from_secs(10), || async {
        a.stats().invalidations_pending == 0
    })
    .await;
    let window = back.elapsed();
    assert!(
        replayed,
        "replayed once Redis takes writes: {:?}",
        a.stats()
    );
    println!("replayed {window:?} after Redis took writes again");
    assert!(window < Duration::from_secs(3), "{window:?}");
    assert_eq!(a.stats().invalidations_replayed, 1);
    assert_eq!(
        read(&b, &db, &key).await,
        Ok(2),
        "the other process loads the new value"
    );
    b.settle().await;
    let hits = a.stats().hits;
    assert_eq!(read(&a, &db, &key).await, Ok(2));
    assert_eq!(a.stats().hits, hits + 1, "this process reads Redis again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_family_removal_covers_its_entries_until_replayed() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let (page1, page2) = (Key::raw("page:1"), Key::raw("page:2"));
    let other = Key::raw("user:1");
    let (a, b, db) = two_with(&server, "replay-family", &[&page1, &page2, &other]).await;
    let pages = KeyFamily::builder().text("page:").part().build();

    db.0.store(2, Ordering::SeqCst);
    config_set(&mut admin, "min-replicas-to-write", "1").await;
    assert!(a.invalidate_family(&pages).await.is_err());
    assert_eq!(read(&a, &db, &page1).await, Ok(2));
    assert_eq!(read(&a, &db, &page2).await, Ok(2));
    assert_eq!(
        read(&a, &db, &other).await,
        Ok(1),
        "another template is not covered"
    );

    config_set(&mut admin, "min-replicas-to-write", "0").await;
    let replayed = eventually(Duration::from_secs(10), || async {
        a.stats().invalidations_pending == 0
    })
    .await;
    assert!(replayed, "{:?}", a.stats());
    assert_eq!(read(&b, &db, &page1).await, Ok(2));
    assert_eq!(read(&b, &db, &page2).await, Ok(2));
    assert_eq!(read(&b, &db, &other).await, Ok(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_update_is_kept_as_an_invalidation() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let key = Key::raw("stock:7");
    let (a, b, db) = two_with(&server, "replay-update", &[&key]).await;

    db.0.store(2, Ordering::SeqCst);
    config_set(&mut admin, "min-replicas-to-write", "1").await;
    let updated = a.update(&key, |v: &mut u64| *v = 2).await;
    assert!(updated.is_err(), "Redis refused it: {updated:?}");
    assert_eq!(a.stats().invalidations_pending, 1);
    assert_eq!(read(&a, &db, &key).await, Ok(2));

    config_set(&mut admin, "min-replicas-to-write", "0").await;
    let replayed = eventually(Duration::from_secs(10), || async {
        a.stats().invalidations_pending == 0
    })
    .await;
    assert!(replayed, "{:?}", a.stats());
    assert_eq!(read(&b, &db, &key).await, Ok(2));
}
