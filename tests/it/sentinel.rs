//! Primary/replica deployments managed by Redis Sentinel (`Cache::sentinel_builder`): real
//! `redis-server --sentinel` processes next to a primary and a replica on loopback. The cache
//! caches and invalidates through the primary the sentinels name; when the primary is
//! SIGKILLed, every call is still answered, and after the promotion the same cache serves hits
//! again, invalidates on the new primary, and wakes its waiters, without a restart. Every
//! connection of a cache follows the promotion before its next call, and a sentinel slower
//! than one `op_timeout` is waited for in the background.

use std::time::{Duration, Instant};

use cached_redis::{Cache, Error, Key, Policy};
use cached_redis_tests::{
    HeldLoad, MASTER, Proxy, RedisSentinel, RedisServer, eventually, get_raw, timed_read,
};

async fn sentinel_cache(sentinel: &RedisSentinel) -> cached_redis::CacheBuilder {
    Cache::sentinel_builder(&[sentinel.url().as_str()], MASTER)
        .namespace("sent")
        .op_timeout(Duration::from_millis(500))
        .breaker_threshold(3)
        .breaker_cooldown(Duration::from_millis(200))
}

async fn read(cache: &Cache, key: &Key, value: &str) -> Result<String, String> {
    let policy = Policy::new("row", Duration::from_secs(60)).unwrap();
    let value = value.to_owned();
    cache.fetch(key, &policy, async move { Ok(value) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_behind_sentinel_caches_and_invalidates() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    replica.replicate(primary.port()).await;
    let sentinel = RedisSentinel::start(primary.port()).await;
    let cache = sentinel_cache(&sentinel)
        .await
        .invalidate_replicas(1, Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let key = Key::raw("row:1");
    assert_eq!(read(&cache, &key, "v1").await.as_deref(), Ok("v1"));
    assert_eq!(read(&cache, &key, "other").await.as_deref(), Ok("v1"));
    assert_eq!(cache.stats().hits, 1);
    let mut on_primary = primary.conn().await;
    assert!(
        get_raw(&mut on_primary, &cache.redis_key(&key))
            .await
            .is_some()
    );
    assert!(
        cache.invalidate(&key).await.unwrap(),
        "removed, and confirmed by the replica"
    );
    assert!(
        get_raw(&mut on_primary, &cache.redis_key(&key))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_is_followed_without_a_restart() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::start();
    replica.replicate(primary.port()).await;
    let sentinel = RedisSentinel::start(primary.port()).await;
    let here = sentinel_cache(&sentinel).await.build().await.unwrap();
    let there = sentinel_cache(&sentinel).await.build().await.unwrap();
    let cached = Key::raw("row:cached");
    assert!(read(&here, &cached, "before").await.is_ok());

    primary.kill();
    let killed_at = Instant::now();
    // Every call is answered while the sentinels fail over.
    let (mut calls, deadline) = (0, killed_at + Duration::from_secs(30));
    while sentinel.primary_port().await != Some(replica.port()) {
        let key = Key::raw(format!("row:during:{calls}"));
        assert_eq!(read(&here, &key, "loaded").await.as_deref(), Ok("loaded"));
        calls += 1;
        assert!(
            Instant::now() < deadline,
            "the sentinel never promoted the replica"
        );
    }
    let promoted_at = Instant::now();
    let probe = Key::raw("row:probe");
    let hits_again = eventually(Duration::from_secs(5), || async {
        let hits = here.stats().hits;
        let _ = read(&here, &probe, "after").await;
        let _ = read(&here, &probe, "after").await;
        here.stats().hits > hits
    })
    .await;
    let resumed = promoted_at.elapsed();
    println!(
        "sentinel failover: promoted {:?} after the kill ({calls} calls answered meanwhile); hits again {resumed:?} after the promotion",
        promoted_at - killed_at
    );
    assert!(
        hits_again,
        "the same cache serves hits again: {:?}",
        here.stats()
    );

    // Invalidation reaches the new primary, and a read after it sees the write.
    here.settle().await;
    let mut on_new_primary = replica.conn().await;
    assert!(
        get_raw(&mut on_new_primary, &here.redis_key(&probe))
            .await
            .is_some()
    );
    assert!(there.invalidate(&probe).await.unwrap());
    assert!(
        get_raw(&mut on_new_primary, &here.redis_key(&probe))
            .await
            .is_none()
    );
    assert_eq!(
        read(&here, &probe, "written").await.as_deref(),
        Ok("written")
    );

    // A waiter here is woken by a store there, on the new primary, within a second.
    let waited = Key::raw("row:waited");
    let holder = HeldLoad::start(&there, &waited, "stored there");
    assert!(eventually(Duration::from_secs(5), || async { there.stats().loads > 0 }).await);
    let waiter = timed_read(&here, &waited, "loaded here");
    assert!(
        eventually(Duration::from_secs(5), || async {
            here.stats().lock_waits > 0
        })
        .await
    );
    let (stored, stored_at) = holder.finish().await;
    let (woken, woken_at) = waiter.await.unwrap();
    let delay = woken_at.saturating_duration_since(stored_at);
    println!("sentinel failover: a waiter answered {delay:?} after the store on the new primary");
    assert_eq!(stored.as_deref(), Ok("stored there"));
    assert_eq!(woken.as_deref(), Ok("stored there"));
    assert!(delay < Duration::from_secs(1), "{delay:?}");
    assert!(resumed < Duration::from_secs(5), "{resumed:?}");
}

/// The data nodes' credentials are the cache's own (`node_auth`), not the sentinels': with them
/// the cache caches on a primary that requires a password; without them every call is
/// answered by its loader and `ping` says why. A cache not behind Sentinel refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_behind_sentinel_logs_in_to_its_data_nodes() {
    let primary = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let sentinel = RedisSentinel::start_with_auth(primary.port(), Some("s3cret")).await;
    let cache = sentinel_cache(&sentinel)
        .await
        .node_auth(None, "s3cret")
        .build()
        .await
        .unwrap();
    let key = Key::raw("auth:1");
    assert_eq!(read(&cache, &key, "stored").await.as_deref(), Ok("stored"));
    assert_eq!(
        read(&cache, &key, "loaded again").await.as_deref(),
        Ok("stored"),
        "a hit: {:?}",
        cache.stats()
    );
    let without = sentinel_cache(&sentinel).await.build().await.unwrap();
    assert_eq!(
        read(&without, &key, "loaded").await.as_deref(),
        Ok("loaded"),
        "answered by the loader"
    );
    let refused = without.ping().await.expect_err("not logged in");
    assert!(
        refused.to_string().contains("NOAUTH"),
        "ping says why: {refused}"
    );
    let misplaced = Cache::builder(&primary.url())
        .node_auth(None, "s3cret")
        .build()
        .await
        .expect_err("not behind Sentinel");
    assert!(
        misplaced.to_string().contains("credentials in the URL"),
        "{misplaced}"
    );
}

/// Starts a primary, a replica of it and a sentinel monitoring them.
async fn deployment() -> (RedisServer, RedisServer, RedisSentinel) {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    replica.replicate(primary.port()).await;
    let sentinel = RedisSentinel::start(primary.port()).await;
    (primary, replica, sentinel)
}

/// Waits until the replica holds every one of `cache`'s `keys` (replication is asynchronous).
async fn replicated(replica: &RedisServer, cache: &Cache, keys: &[&Key]) {
    let on_replica = replica.conn().await;
    for key in keys {
        let there = eventually(Duration::from_secs(5), || {
            let (mut conn, key) = (on_replica.clone(), cache.redis_key(key));
            async move { get_raw(&mut conn, &key).await.is_some() }
        })
        .await;
        assert!(there, "{key:?} reached the replica");
    }
}

/// SIGKILLs the primary and, until the sentinel names `replica` as the primary, keeps every
/// one of `caches` reading `hit` (a value the replica holds, so nothing is written): each
/// cache's reads find the primary gone, and nothing else of theirs is used.
async fn fail_over(
    primary: &mut RedisServer,
    replica: &RedisServer,
    sentinel: &RedisSentinel,
    caches: &[&Cache],
    hit: &Key,
) {
    primary.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sentinel.primary_port().await != Some(replica.port()) {
        for cache in caches {
            assert!(read(cache, hit, "loaded").await.is_ok());
        }
        assert!(
            Instant::now() < deadline,
            "the sentinel never promoted the replica"
        );
    }
}

/// Issue 12: an invalidation sent the moment the sentinel names the new primary goes there,
/// through the write connection and through the replica-confirmed (`WAIT`) one, although
/// neither was used since the kill. Before the fix both still pointed at the dead primary and
/// answered `Err(Redis(broken pipe))` (the reads had followed, alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_after_a_promotion_invalidations_reach_the_new_primary() {
    let (mut primary, replica, sentinel) = deployment().await;
    let cache = sentinel_cache(&sentinel).await.build().await.unwrap();
    let confirmed = sentinel_cache(&sentinel)
        .await
        .invalidate_replicas(1, Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let (plain, waited) = (Key::raw("row:plain"), Key::raw("row:waited"));
    // Every connection is made on the first primary: reads, writes (the lease), WAIT's.
    for key in [&plain, &waited] {
        assert_eq!(read(&cache, key, "v1").await.as_deref(), Ok("v1"));
    }
    assert_eq!(read(&confirmed, &plain, "v2").await.as_deref(), Ok("v1"));
    assert_eq!(
        confirmed.invalidate(&Key::raw("row:absent")).await.ok(),
        Some(false)
    );
    replicated(&replica, &cache, &[&plain, &waited]).await;

    fail_over(
        &mut primary,
        &replica,
        &sentinel,
        &[&cache, &confirmed],
        &plain,
    )
    .await;
    let removed = cache.invalidate(&plain).await;
    let confirmed_removal = confirmed.invalidate(&waited).await;

    assert!(
        matches!(removed, Ok(true)),
        "the first invalidation after the promotion: {removed:?}"
    );
    assert!(
        matches!(
            confirmed_removal,
            Err(Error::NotReplicated {
                acknowledged: 0,
                wanted: 1
            })
        ),
        "sent to the new primary, which has no replica yet (not to the dead one): {confirmed_removal:?}"
    );
    cache.settle().await;
    let mut on_new_primary = replica.conn().await;
    for key in [&plain, &waited] {
        assert!(
            get_raw(&mut on_new_primary, &cache.redis_key(key))
                .await
                .is_none()
        );
    }
}

/// Issue 12: once hits resume after a promotion, a load started in one cache takes its lease
/// on the new primary, and a reader in another cache (standing for another process: its own
/// connections, flights and wake-ups) waits for it instead of loading too. Before the fix
/// the write connections still pointed at the dead primary: the lease could not be taken,
/// and both loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_after_a_promotion_one_load_serves_two_caches() {
    let (mut primary, replica, sentinel) = deployment().await;
    let here = sentinel_cache(&sentinel).await.build().await.unwrap();
    let there = sentinel_cache(&sentinel).await.build().await.unwrap();
    let cached = Key::raw("row:cached");
    assert_eq!(read(&here, &cached, "v1").await.as_deref(), Ok("v1"));
    assert_eq!(read(&there, &cached, "v2").await.as_deref(), Ok("v1"));
    let theirs = Key::raw("row:theirs");
    assert_eq!(read(&there, &theirs, "v1").await.as_deref(), Ok("v1"));
    replicated(&replica, &here, &[&cached, &theirs]).await;

    fail_over(&mut primary, &replica, &sentinel, &[&here, &there], &cached).await;
    for cache in [&here, &there] {
        let hits_again = eventually(Duration::from_secs(5), || async {
            let hits = cache.stats().hits;
            let _ = read(cache, &cached, "loaded").await;
            cache.stats().hits > hits
        })
        .await;
        assert!(hits_again, "hits resume: {:?}", cache.stats());
    }

    let (here_loads, there_loads) = (here.stats().loads, there.stats().loads);
    let key = Key::raw("row:after");
    let holder = HeldLoad::start(&here, &key, "loaded here");
    let loading = eventually(Duration::from_secs(5), || async {
        here.stats().loads > here_loads
    })
    .await;
    let waiter = timed_read(&there, &key, "loaded there");
    let waiting = eventually(Duration::from_secs(5), || async {
        there.stats().lock_waits > 0 || there.stats().loads > there_loads
    })
    .await;
    let (stored, _) = holder.finish().await;
    let (got, _) = waiter.await.unwrap();
    assert!(loading && waiting, "both reads started");
    assert_eq!(stored.as_deref(), Ok("loaded here"));
    assert_eq!(
        got.as_deref(),
        Ok("loaded here"),
        "the other cache waited for the load instead of loading: here {:?}, there {:?}",
        here.stats(),
        there.stats()
    );
    assert_eq!(here.stats().loads - here_loads, 1);
    assert_eq!(there.stats().loads - there_loads, 0);
    here.settle().await;
    let mut on_new_primary = replica.conn().await;
    assert!(
        get_raw(&mut on_new_primary, &here.redis_key(&key))
            .await
            .is_some()
    );
}

/// Issue 13: with the default `op_timeout` (250 ms), a sentinel that answers 150 ms late (its
/// handshake, `ROLE` and `SENTINEL MASTERS` take over 400 ms together) is waited for in the
/// background, and the cache connects. Before the fix, discovery ran inside each caller's
/// bounded call and started over at every call: no hit, ever, every call answered by its
/// loader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_answers_late_is_waited_for_in_the_background() {
    let primary = RedisServer::start();
    let sentinel = RedisSentinel::start(primary.port()).await;
    let far = Proxy::start_delayed(sentinel.port(), Duration::from_millis(150)).await;
    let cache = Cache::sentinel_builder(&[far.url().as_str()], MASTER)
        .namespace("slow")
        .build()
        .await
        .unwrap();
    let key = Key::raw("row:far");
    let started = Instant::now();
    let hit = eventually(Duration::from_secs(8), || async {
        let hits = cache.stats().hits;
        let _ = read(&cache, &key, "loaded").await;
        cache.stats().hits > hits
    })
    .await;
    println!(
        "slow sentinel: first hit {:?} after the first call",
        started.elapsed()
    );
    assert!(hit, "the cache connected: {:?}", cache.stats());
}

/// A primary that hangs (SIGSTOP: connections stay open, nothing answers) fails no call; calls
/// only time out. Once the sentinel promotes the replica, the cache follows within about a
/// second of checking with the sentinels, rather than never (before the fix: no hit for 20 s
/// after the promotion, and every invalidation `Err(Timeout)`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_hangs_is_left_once_the_sentinel_replaces_it() {
    let (primary, replica, sentinel) = deployment().await;
    let cache = sentinel_cache(&sentinel).await.build().await.unwrap();
    let probe = Key::raw("row:hangs");
    read(&cache, &probe, "before").await.unwrap();
    primary.pause();
    let promoted = eventually(Duration::from_secs(30), || async {
        sentinel.primary_port().await == Some(replica.port())
    });
    assert!(promoted.await, "the sentinel promoted the replica");
    let followed = eventually(Duration::from_secs(5), || async {
        cache.invalidate(&probe).await.is_ok()
    });
    assert!(followed.await, "invalidations reach the new primary");
    let hits = cache.stats().hits;
    read(&cache, &probe, "after").await.unwrap();
    assert_eq!(read(&cache, &probe, "loaded again").await.unwrap(), "after");
    assert!(cache.stats().hits > hits, "{:?}", cache.stats());
    primary.resume();
}

/// After the hang ends, the demoted node still answers reads with what it held. A cache that
/// made no call while it hung must not serve a value another process invalidated on the new
/// primary (before the fix: the old value, as a hit, for 10 s after the resume).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_primary_serves_no_stale_hit_to_a_cache_that_was_idle() {
    let (primary, replica, sentinel) = deployment().await;
    let idle = sentinel_cache(&sentinel).await.build().await.unwrap();
    let probe = Key::raw("row:demoted");
    read(&idle, &probe, "before").await.unwrap();
    primary.pause();
    let promoted = eventually(Duration::from_secs(30), || async {
        sentinel.primary_port().await == Some(replica.port())
    });
    assert!(promoted.await, "the sentinel promoted the replica");
    let other = sentinel_cache(&sentinel).await.build().await.unwrap();
    let invalidated = eventually(Duration::from_secs(5), || async {
        other.invalidate(&probe).await.is_ok()
    });
    assert!(invalidated.await);
    assert_eq!(read(&other, &probe, "after").await.unwrap(), "after");
    primary.resume();
    let fresh = eventually(Duration::from_secs(5), || async {
        read(&idle, &probe, "loaded").await.as_deref() == Ok("after")
    });
    assert!(fresh.await, "the idle cache follows the new primary");
    for _ in 0..50 {
        let read = read(&idle, &probe, "loaded").await.unwrap();
        assert_ne!(read, "before", "a value invalidated on the new primary");
    }
}
