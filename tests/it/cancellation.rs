//! Guarantee 7: a caller whose future is dropped mid-load, or whose loader panics, leaves
//! nobody hanging: its lease is released at once (not after `lock_ttl`), local callers that
//! joined it take over, and no in-process state is left behind.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, redis_cached};
use cached_redis_tests::{RedisServer, assert_no_state_left, config_set, eventually, get_raw};
use tokio::sync::Notify;

#[derive(Clone, Copy, Debug)]
enum Loader {
    Hangs,
    PanicsOnSignal,
    Answers,
}

static PANIC_NOW: Notify = Notify::const_new();
static PANICS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "job:<id>", ttl = "60s", cache = cache)]
async fn job(cache: &Cache, id: u32, loader: Loader) -> Result<String, String> {
    match loader {
        Loader::Hangs => std::future::pending().await,
        Loader::PanicsOnSignal => {
            PANIC_NOW.notified().await;
            PANICS.fetch_add(1, Ordering::SeqCst);
            panic!("loader bug")
        }
        Loader::Answers => Ok(format!("job-{id}")),
    }
}

/// Until `cache` has started `n` loads.
async fn loading(cache: &Cache, n: u64) -> bool {
    eventually(Duration::from_secs(2), || async {
        cache.stats().loads >= n
    })
    .await
}

async fn lease_released(server: &RedisServer, cache: &Cache, id: u32) -> bool {
    let conn = server.conn().await;
    let lease = format!(
        "{}:lease",
        cache.redis_key(&Key::builder().text("job:").part(&id).build())
    );
    // Well before the 5 s lock_ttl would expire it.
    eventually(Duration::from_millis(2500), || {
        let (mut conn, lease) = (conn.clone(), lease.clone());
        async move { get_raw(&mut conn, &lease).await.is_none() }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_releases_its_lease_and_waiters_elsewhere_take_over() {
    let server = RedisServer::start();
    let here = server.cache("cancel").await;
    let there = server.cache("cancel").await; // another process, default lock_ttl of 5 s
    let leader = {
        let here = here.clone();
        tokio::spawn(async move { job(&here, 1, Loader::Hangs).await })
    };
    assert!(loading(&here, 1).await);
    let waiter = {
        let there = there.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (job(&there, 1, Loader::Answers).await, started.elapsed())
        })
    };
    assert!(
        eventually(Duration::from_secs(2), || async {
            there.stats().lock_waits == 1
        })
        .await
    );
    leader.abort(); // the caller goes away mid-load
    let (value, waited) = waiter.await.unwrap();
    assert_eq!(value.as_deref(), Ok("job-1"));
    assert!(
        waited < Duration::from_millis(2500),
        "took over long before the 5 s lock_ttl: {waited:?}"
    );
    assert_no_state_left(&here).await;
    assert_no_state_left(&there).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_callers_that_joined_a_cancelled_leader_take_over() {
    let server = RedisServer::start();
    let cache = server.cache("cancel-local").await;
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move { job(&cache, 2, Loader::Hangs).await })
    };
    assert!(loading(&cache, 1).await);
    let joiner = {
        let cache = cache.clone();
        tokio::spawn(async move { job(&cache, 2, Loader::Answers).await })
    };
    assert!(
        eventually(Duration::from_secs(2), || async {
            cache.stats().coalesced == 1
        })
        .await
    );
    // Dropping the leader's future mid-load, as a timeout would.
    let started_at = Instant::now();
    leader.abort();
    assert_eq!(joiner.await.unwrap().as_deref(), Ok("job-2"));
    assert!(started_at.elapsed() < Duration::from_millis(2500));
    assert_no_state_left(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_loader_releases_its_lease_and_its_joiners() {
    let server = RedisServer::start();
    let cache = server.cache("panic").await;
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move { job(&cache, 3, Loader::PanicsOnSignal).await })
    };
    assert!(loading(&cache, 1).await);
    let joiner = {
        let cache = cache.clone();
        tokio::spawn(async move { job(&cache, 3, Loader::Answers).await })
    };
    assert!(
        eventually(Duration::from_secs(2), || async {
            cache.stats().coalesced == 1
        })
        .await
    );
    PANIC_NOW.notify_one();
    assert!(
        leader.await.unwrap_err().is_panic(),
        "the panic reaches its own caller"
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 1);
    assert_eq!(joiner.await.unwrap().as_deref(), Ok("job-3"));
    assert_no_state_left(&cache).await;
    let mut conn = server.conn().await;
    let value = get_raw(&mut conn, &cache.redis_key(&Key::raw("job:3"))).await;
    assert!(
        value.is_some(),
        "the caller that took over stored its value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_caller_leaves_no_lease_behind() {
    let server = RedisServer::start();
    let cache = server.cache("timeout").await;
    // The caller gives up (its future is dropped) once its load has started under the lease.
    let load_started = tokio::select! {
        _ = job(&cache, 4, Loader::Hangs) => false,
        started = loading(&cache, 1) => started,
    };
    assert!(load_started, "the load started before the caller gave up");
    assert!(
        lease_released(&server, &cache, 4).await,
        "released at once, not after lock_ttl"
    );
    assert_no_state_left(&cache).await;
}

/// The give-back of a cancelled leader's lease that Redis refuses (writes refused for a
/// moment: `min-replicas-to-write` unmet here; a failover's demoted primary answers the same
/// way) is tried again until Redis takes it, not left to expire after `lock_ttl`. Failed with
/// the give-back tried once: the lease stayed for the whole 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_give_back_redis_refused_is_tried_again_until_it_is_taken() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let here = server.cache("cancel-refused").await;
    let leader = {
        let here = here.clone();
        tokio::spawn(async move { job(&here, 1, Loader::Hangs).await })
    };
    assert!(loading(&here, 1).await);
    config_set(&mut admin, "min-replicas-to-write", "1").await;
    let refused_before = here.stats().redis_errors;
    leader.abort(); // the caller goes away mid-load, while Redis refuses writes
    let refused = eventually(Duration::from_secs(2), || async {
        here.stats().redis_errors > refused_before
    })
    .await;
    assert!(refused, "the first give-back was refused");
    let taken = Instant::now();
    config_set(&mut admin, "min-replicas-to-write", "0").await;
    assert!(lease_released(&server, &here, 1).await);
    assert!(
        taken.elapsed() < Duration::from_millis(2500),
        "given back once Redis took writes again, long before the 5 s lock_ttl: {:?}",
        taken.elapsed()
    );
    assert_no_state_left(&here).await;
}
