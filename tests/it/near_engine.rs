//! The engine's guarantees with `near` switched on: one load per cold key in a process and
//! across two, errors never cached nor kept, `None` kept only with `none_ttl`, a load racing an
//! invalidation neither stored nor kept near, `update_*` reaching this process's copy before it
//! returns and another process's with Redis's message, and an invalidation Redis refused kept
//! by the writer and replayed into the other process's copy. (The near cache's own guarantees
//! are in `near.rs` and `near_attack.rs`; the consistency checker runs with `near` in
//! `consistency.rs`.)

use std::sync::Arc;
use std::time::Duration;

use cached_redis::{Cache, redis_cached};
use cached_redis_tests::{HeldDb, RedisServer, eventually, near_cache, until_near_hit};

#[redis_cached(key = "row:<id>", ttl = "60s", near = "30s", cache = cache)]
async fn row(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

#[redis_cached(key = "maybe:<id>", ttl = "60s", none_ttl = "60s", near = "30s", cache = cache)]
async fn maybe(cache: &Cache, db: &HeldDb, id: u32) -> Result<Option<u64>, String> {
    let _ = id;
    Ok(Some(db.read().await?).filter(|v| *v != 0))
}

/// Two processes, each with a near cache.
async fn two(server: &RedisServer, namespace: &str) -> (Cache, Cache) {
    let lag = Duration::from_secs(5);
    (
        near_cache(&server.url(), namespace, lag).await,
        near_cache(&server.url(), namespace, lag).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_in_two_processes_load_once() {
    let server = RedisServer::start();
    let (p1, p2) = two(&server, "ne-stampede").await;
    let db = Arc::new(HeldDb::new(1));
    let started = db.hold_next_read();
    let callers: Vec<_> = [&p1, &p2]
        .into_iter()
        .flat_map(|cache| std::iter::repeat_n(cache.clone(), 50))
        .map(|cache| {
            let db = db.clone();
            tokio::spawn(async move { row(&cache, &db, 1).await })
        })
        .collect();
    started.await;
    let everyone_missed = eventually(Duration::from_secs(10), || async {
        p1.stats().misses + p2.stats().misses >= 100
    });
    assert!(everyone_missed.await, "every caller read Redis first");
    db.release();
    for caller in callers {
        assert_eq!(caller.await.unwrap(), Ok(1));
    }
    assert_eq!(db.reads(), 1, "one load over both processes");
    for cache in [&p1, &p2] {
        until_near_hit(cache, || async {
            assert_eq!(row(cache, &db, 1).await, Ok(1))
        })
        .await;
    }
    assert_eq!(db.reads(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_neither_cached_nor_kept_near() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "ne-errors", Duration::from_secs(5)).await;
    let db = HeldDb::new(1);
    db.fail(true);
    assert!(row(&cache, &db, 1).await.is_err());
    assert!(row(&cache, &db, 1).await.is_err(), "the error was not kept");
    db.fail(false);
    assert_eq!(row(&cache, &db, 1).await, Ok(1));
    assert_eq!(db.reads(), 3);
    until_near_hit(&cache, || async {
        assert_eq!(row(&cache, &db, 1).await, Ok(1))
    })
    .await;
    assert_eq!(db.reads(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_none_is_kept_near_only_with_none_ttl_and_goes_with_an_invalidation() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "ne-none", Duration::from_secs(5)).await;
    let db = HeldDb::new(0);
    assert_eq!(maybe(&cache, &db, 1).await, Ok(None));
    until_near_hit(&cache, || async {
        assert_eq!(maybe(&cache, &db, 1).await, Ok(None))
    })
    .await;
    assert_eq!(db.reads(), 1);
    db.set_version(3);
    assert!(invalidate_maybe(&cache, 1).await.unwrap());
    assert_eq!(maybe(&cache, &db, 1).await, Ok(Some(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_racing_an_invalidation_is_neither_stored_nor_kept_near() {
    let server = RedisServer::start();
    let (p1, p2) = two(&server, "ne-race").await;
    let db = Arc::new(HeldDb::new(1));
    let started = db.hold_next_read();
    let stale = {
        let (cache, db) = (p1.clone(), db.clone());
        tokio::spawn(async move { row(&cache, &db, 1).await })
    };
    started.await; // read version 1, held
    db.set_version(2);
    assert!(
        !invalidate_row(&p2, 1).await.unwrap(),
        "only the lease was there"
    );
    db.release();
    assert_eq!(stale.await.unwrap(), Ok(1), "its read overlapped the write");
    p1.settle().await;
    assert_eq!(p1.stats().stale_refused, 1);
    for cache in [&p1, &p2] {
        assert_eq!(row(cache, &db, 1).await, Ok(2), "no copy of the stale load");
        until_near_hit(cache, || async {
            assert_eq!(row(cache, &db, 1).await, Ok(2))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_reaches_this_copy_at_once_and_the_other_with_redis() {
    let server = RedisServer::start();
    let (p1, p2) = two(&server, "ne-update").await;
    let db = HeldDb::new(1);
    for cache in [&p1, &p2] {
        until_near_hit(cache, || async {
            assert_eq!(row(cache, &db, 1).await, Ok(1))
        })
        .await;
    }
    db.set_version(5);
    assert!(update_row(&p1, 1, |v: &mut u64| *v = 5).await.unwrap());
    assert_eq!(
        row(&p1, &db, 1).await,
        Ok(5),
        "this process's copy went before the return"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            row(&p2, &db, 1).await == Ok(5)
        })
        .await,
        "the other process's copy went with Redis's message"
    );
    assert_eq!(db.reads(), 1, "updated in place, not reloaded");
}

/// An invalidation Redis refused, with `near` on in both processes: the writer's process keeps
/// no copy and loads the new row at once; the other keeps serving its copy (Redis still holds
/// the old entry); the replay, once Redis takes writes, drops that copy through Redis's
/// invalidation message, and the other process loads the new row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_invalidation_is_replayed_into_the_other_processes_near_copy() {
    let server = RedisServer::start();
    let (writer, other) = two(&server, "ne-replay").await;
    let db = HeldDb::new(1);
    let mut admin = server.conn().await;
    for cache in [&writer, &other] {
        until_near_hit(cache, || async {
            assert_eq!(row(cache, &db, 1).await, Ok(1))
        })
        .await;
    }
    cached_redis_tests::config_set(&mut admin, "min-replicas-to-write", "1").await;
    db.set_version(2);
    assert!(
        invalidate_row(&writer, 1).await.is_err(),
        "Redis refused it"
    );
    let before = writer.stats();
    assert_eq!(
        row(&writer, &db, 1).await,
        Ok(2),
        "the writer sees its write"
    );
    assert_eq!(writer.stats().near_hits, before.near_hits);
    assert_eq!(
        row(&other, &db, 1).await,
        Ok(1),
        "the other's copy, until the replay"
    );

    cached_redis_tests::config_set(&mut admin, "min-replicas-to-write", "0").await;
    let replayed = eventually(Duration::from_secs(10), || async {
        row(&other, &db, 1).await == Ok(2)
    })
    .await;
    assert!(replayed, "{:?}", writer.stats());
    assert_eq!(writer.stats().invalidations_pending, 0);
}
