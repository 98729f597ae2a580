//! The near cache: decoded values in process memory, served without asking Redis, and dropped
//! when Redis reports their key written or removed, from any connection; flushed whole when
//! the tracking connection is lost, black-holed or sees a `FLUSHALL`; never older than the
//! entry's Redis TTL; and never filled by a reply that an invalidation overtook.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, redis_cached};
use cached_redis_tests::{
    HeldDb, Proxy, RedisServer, command_calls, eventually, near_cache, near_cache_timed,
    until_near_hit,
};

#[redis_cached(key = "row:<id>", ttl = "60s", near = "30s", cache = cache)]
async fn row(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

fn key(id: u32) -> Key {
    Key::builder().text("row:").part(&id).build()
}

/// A value read from Redis is kept; afterwards calls are answered in memory. (The message
/// for the write-back of the first call comes back to this process too, and may drop the copy
/// the second call kept: calls go on until one is a near hit.)
async fn warm(cache: &Cache, db: &HeldDb, id: u32) -> u64 {
    let first = row(cache, db, id).await.unwrap(); // a miss: loaded and written back
    until_near_hit(cache, || async {
        assert_eq!(row(cache, db, id).await, Ok(first))
    })
    .await;
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_hits_send_no_command() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "near-quiet", Duration::from_secs(5)).await;
    let db = HeldDb::new(1);
    warm(&cache, &db, 1).await;
    let mut conn = server.conn().await;
    let gets = command_calls(&mut conn, "get").await;
    let evals = command_calls(&mut conn, "evalsha").await;
    let before = cache.stats();
    for _ in 0..1_000 {
        assert_eq!(row(&cache, &db, 1).await, Ok(1));
    }
    let after = cache.stats();
    assert_eq!(after.near_hits - before.near_hits, 1_000);
    assert_eq!(after.hits, before.hits, "no Redis hit");
    assert_eq!(
        command_calls(&mut conn, "get").await,
        gets,
        "no GET reached Redis"
    );
    assert_eq!(command_calls(&mut conn, "evalsha").await, evals);
    assert_eq!(db.reads(), 1);
    assert_eq!(after.near_entries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_from_another_connection_drops_the_copy() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "near-other", Duration::from_secs(5)).await;
    let db = HeldDb::new(1);
    let mut conn = server.conn().await;
    for (id, command) in [(1, "DEL"), (2, "SET"), (3, "EXPIRE")] {
        warm(&cache, &db, id).await;
        db.set_version(u64::from(id) + 10);
        let redis_key = cache.redis_key(&key(id));
        let mut cmd = redis::cmd(command);
        cmd.arg(&redis_key);
        match command {
            "SET" => cmd.arg("not a cached value"),
            "EXPIRE" => cmd.arg(0),
            _ => &mut cmd,
        };
        let _: redis::Value = cmd.query_async(&mut conn).await.unwrap();
        let fresh = u64::from(id) + 10;
        assert!(
            eventually(Duration::from_secs(5), || async {
                row(&cache, &db, id).await == Ok(fresh)
            })
            .await,
            "{command} from another connection reached the near copy"
        );
    }
}

/// For each trial: `reader` keeps a copy, `writer` invalidates the entry, and the time from
/// the invalidation's return to `reader`'s first call that is not a near hit is measured.
async fn invalidation_delays(reader: &Cache, writer: &Cache, trials: u64) -> Vec<Duration> {
    let db = HeldDb::new(1);
    let mut delays = Vec::new();
    for trial in 0..trials {
        db.set_version(trial);
        // Until the value is kept near (an earlier trial's invalidation may still be coming).
        until_near_hit(reader, || async {
            row(reader, &db, 1).await.unwrap();
        })
        .await;
        db.set_version(trial + 1_000_000);
        assert!(invalidate_row(writer, 1).await.unwrap());
        let done = Instant::now();
        // Spin (yielding) until the copy is gone: a call that is no near hit.
        loop {
            let before = reader.stats().near_hits;
            let value = row(reader, &db, 1).await.unwrap();
            if reader.stats().near_hits == before {
                assert_eq!(value, trial + 1_000_000);
                break;
            }
            tokio::task::yield_now().await;
        }
        delays.push(done.elapsed());
    }
    delays.sort();
    delays
}

fn p50_p99(delays: &[Duration]) -> (Duration, Duration) {
    (delays[delays.len() / 2], delays[delays.len() * 99 / 100])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_caches_invalidation_reaches_this_one_within_the_measured_bound() {
    let server = RedisServer::start();
    let reader = near_cache(&server.url(), "near-bound", Duration::from_secs(5)).await;
    let writer = server.cache("near-bound").await;
    let (p50, p99) = p50_p99(&invalidation_delays(&reader, &writer, 1_000).await);
    println!("near invalidation from another cache, idle: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
}

/// The same with the reading process's runtime saturated (tasks that spin and yield on both
/// workers): the message is applied by a task of that runtime, and a copy is served only
/// while the heartbeat, another of its tasks, confirms: the bound is the lag (1 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_holds_with_the_reading_runtime_saturated() {
    let server = RedisServer::start();
    let lag = Duration::from_secs(1);
    let reader = near_cache(&server.url(), "near-busy", lag).await;
    let writer = server.cache("near-busy").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let spun = Instant::now();
                    while spun.elapsed() < Duration::from_micros(200) {
                        std::hint::spin_loop();
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let delays = invalidation_delays(&reader, &writer, 300).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for spinner in spinners {
        spinner.await.unwrap();
    }
    let (p50, p99) = p50_p99(&delays);
    println!(
        "near invalidation from another cache, reader's runtime saturated: p50 {p50:?}, p99 {p99:?}"
    );
    let worst = *delays.last().unwrap();
    assert!(worst < lag * 2, "worst {worst:?} with a lag of {lag:?}");
}

/// Each write is made with the tracking connection's messages held, so only the write's own
/// local drop can keep the next call from the old copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_caches_own_writes_drop_the_copy_before_they_return() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = near_cache(&proxy.url(), "near-own", Duration::from_secs(30)).await;
    let tracker = 0; // made at build, before any other connection
    let db = HeldDb::new(1);

    warm(&cache, &db, 1).await;
    db.set_version(2);
    proxy.hold_replies(tracker);
    assert!(invalidate_row(&cache, 1).await.unwrap());
    assert_eq!(row(&cache, &db, 1).await, Ok(2), "invalidate_*");
    proxy.release_replies(tracker);

    warm(&cache, &db, 1).await;
    proxy.hold_replies(tracker);
    update_row(&cache, 1, |v: &mut u64| *v = 3).await.unwrap();
    assert_eq!(row(&cache, &db, 1).await, Ok(3), "update_*");
    proxy.release_replies(tracker);

    warm(&cache, &db, 2).await;
    db.set_version(4);
    proxy.hold_replies(tracker);
    assert_eq!(refresh_row(&cache, &db, 2).await.unwrap(), Ok(4));
    assert_eq!(row(&cache, &db, 2).await, Ok(4), "refresh_*");
    proxy.release_replies(tracker);

    let bulk: [(&str, u64); 3] = [
        ("invalidate_all_*", 5),
        ("invalidate_prefix", 6),
        ("clear", 7),
    ];
    for (what, version) in bulk {
        warm(&cache, &db, 2).await;
        db.set_version(version);
        proxy.hold_replies(tracker);
        match what {
            "invalidate_all_*" => drop(invalidate_all_row(&cache).await.unwrap()),
            "invalidate_prefix" => drop(cache.invalidate_prefix("row:").await.unwrap()),
            _ => drop(cache.clear().await.unwrap()),
        }
        assert_eq!(row(&cache, &db, 2).await, Ok(version), "{what}");
        proxy.release_replies(tracker);
    }
}

/// The in-flight race: a GET whose reply is held while another connection invalidates the
/// key, then let through. The caller that sent it may get the old value (it asked first), but
/// it must not become a near copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_an_invalidation_overtook_is_not_kept() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    // The held GET waits for a heartbeat to confirm the invalidation: a minute, not the usual
    // 5 s, before it would time out and load (as it did once on a loaded machine).
    let patient = Duration::from_secs(60);
    let cache = near_cache_timed(&proxy.url(), "near-race", Duration::from_secs(5), patient).await;
    let writer = server.cache("near-race").await;
    let db = HeldDb::new(1);
    // The first call's GET is the first command on a connection made after the tracker's:
    // the reads connection, which only reads.
    let reads = proxy.connections();
    assert_eq!(row(&cache, &db, 1).await, Ok(1));
    cache.settle().await; // stored in Redis, not near
    proxy.hold_replies(reads);
    let held = tokio::spawn({
        let (cache, db) = (cache.clone(), Arc::new(HeldDb::new(99)));
        async move { row(&cache, &db, 1).await }
    });
    db.set_version(2);
    assert!(invalidate_row(&writer, 1).await.unwrap());
    let invalidated = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || async {
            cached_redis::__private::near_applied_since(&cache, invalidated)
        })
        .await,
        "the tracking connection applied the invalidation"
    );
    proxy.release_replies(reads);
    assert_eq!(held.await.unwrap(), Ok(1), "the call that asked first");
    let before = cache.stats();
    assert_eq!(row(&cache, &db, 1).await, Ok(2), "not the overtaken reply");
    assert_eq!(cache.stats().near_hits, before.near_hits);
    assert!(cache.stats().near_rejected > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tracking_connection_flushes_and_comes_back() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "near-kill", Duration::from_secs(5)).await;
    let db = HeldDb::new(1);
    warm(&cache, &db, 1).await;
    let flushes = cache.stats().near_flushes;
    let mut conn = server.conn().await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    let tracker = list
        .lines()
        .find(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('t'))
        })
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .expect("a tracking client")
        .to_owned();
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&tracker)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            cache.stats().near_flushes > flushes
        })
        .await
    );
    let hits = cache.stats().hits;
    assert_eq!(row(&cache, &db, 1).await, Ok(1));
    assert_eq!(
        cache.stats().hits,
        hits + 1,
        "after the flush, Redis answers"
    );
    assert!(eventually(Duration::from_secs(10), || async { cache.near_is_live() }).await);
    warm(&cache, &db, 1).await;
}

/// With the tracking connection black-holed (its replies and invalidations held), no copy is
/// served once the allowed lag has passed since the last heartbeat got through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_tracking_connection_stops_near_hits_within_the_lag() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let lag = Duration::from_millis(400);
    let cache = near_cache(&proxy.url(), "near-hole", lag).await;
    let db = HeldDb::new(1);
    warm(&cache, &db, 1).await;
    proxy.hold_replies(0); // the tracker's: made at build, before any other
    let held = Instant::now();
    let mut conn = server.conn().await;
    let _: () = redis::cmd("DEL")
        .arg(cache.redis_key(&key(1)))
        .query_async(&mut conn)
        .await
        .unwrap();
    db.set_version(2);
    let deadline = held + lag;
    loop {
        let started = Instant::now();
        let value = row(&cache, &db, 1).await.unwrap();
        if value == 2 {
            break;
        }
        assert!(
            started <= deadline,
            "a stale copy served {:?} after the tracker went silent (lag {lag:?})",
            started - held
        );
        tokio::task::yield_now().await;
    }
    proxy.release_replies(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_flushes_every_copy() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "near-flushall", Duration::from_secs(5)).await;
    let db = HeldDb::new(1);
    warm(&cache, &db, 1).await;
    warm(&cache, &db, 2).await;
    db.set_version(2);
    let mut conn = server.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            row(&cache, &db, 1).await == Ok(2) && row(&cache, &db, 2).await == Ok(2)
        })
        .await
    );
    assert!(cache.stats().near_flushes >= 1);
}

#[redis_cached(key = "short:<id>", ttl = "1500ms", jitter = "500ms", near = "60s", cache = cache)]
async fn short(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// A copy is never served past the entry's Redis TTL, whatever `near` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_never_outlives_the_redis_ttl() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "near-ttl", Duration::from_secs(5)).await;
    let db = HeldDb::new(1);
    let mut conn = server.conn().await;
    assert_eq!(short(&cache, &db, 1).await, Ok(1));
    cache.settle().await;
    let redis_key = cache.redis_key(&Key::builder().text("short:").part(&1u32).build());
    let left = cached_redis_tests::pttl(&mut conn, &redis_key).await;
    let expires = Instant::now() + Duration::from_millis(left as u64);
    assert_eq!(short(&cache, &db, 1).await, Ok(1)); // kept near
    db.set_version(2);
    // Waiting for the expiry is what is tested here.
    tokio::time::sleep_until((expires + Duration::from_millis(5)).into()).await;
    assert_eq!(
        short(&cache, &db, 1).await,
        Ok(2),
        "the Redis entry has expired"
    );
}

/// Redis answering reads but refusing writes (`min-replicas-to-write` with no replica): near
/// hits go on, since the tracking connection only reads; an `invalidate_*` that Redis refused
/// still drops this process's copy before it returns `Err`; and once writes are taken again,
/// another process's invalidation drops the copy as before (tracking was never lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_writes_refused_near_hits_go_on_and_a_refused_invalidation_drops_the_copy() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "near-refused", Duration::from_secs(5)).await;
    let other = server.cache("near-refused").await; // another process
    let db = HeldDb::new(1);
    let mut conn = server.conn().await;
    warm(&cache, &db, 1).await;
    cached_redis_tests::config_set(&mut conn, "min-replicas-to-write", "1").await;
    let before = cache.stats();
    assert_eq!(row(&cache, &db, 1).await, Ok(1));
    assert_eq!(
        cache.stats().near_hits,
        before.near_hits + 1,
        "near hits go on"
    );
    assert!(
        invalidate_row(&cache, 1).await.is_err(),
        "Redis refused the removal"
    );
    let before = cache.stats();
    assert_eq!(row(&cache, &db, 1).await, Ok(1));
    let after = cache.stats();
    assert_eq!(
        after.near_hits, before.near_hits,
        "the copy went with the refused invalidation"
    );
    assert_eq!(
        (after.hits, after.loads),
        (before.hits, before.loads + 1),
        "the entry it covers is loaded, not read from Redis, until it is replayed"
    );

    cached_redis_tests::config_set(&mut conn, "min-replicas-to-write", "0").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            cache.stats().invalidations_pending == 0
        })
        .await,
        "replayed once Redis takes writes"
    );
    let reads = db.reads();
    warm(&cache, &db, 1).await;
    db.set_version(2);
    assert!(invalidate_row(&other, 1).await.unwrap());
    assert!(
        eventually(Duration::from_secs(10), || async {
            row(&cache, &db, 1).await == Ok(2)
        })
        .await,
        "the other process's invalidation reached this one's copy"
    );
    assert_eq!(
        db.reads(),
        reads + 2,
        "a load after the replay, one after the invalidation"
    );
}
