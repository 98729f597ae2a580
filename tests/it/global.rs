//! The default cache: before `set_global`, calls run the loader and invalidation reports
//! `NotConfigured`; after it, calls go through the installed cache (one test, because the
//! global is process-wide); and `with_cache` gives one future a default of its own.

use std::sync::atomic::{AtomicU32, Ordering};

use cached_redis::{Error, redis_cached};
use cached_redis_tests::RedisServer;

static LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "greeting:<name>", ttl = "60s")]
async fn greeting(name: &str) -> String {
    LOADS.fetch_add(1, Ordering::SeqCst);
    format!("hello {name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cache_the_loader_runs_and_with_one_the_cache_is_used() {
    assert!(cached_redis::global().is_none());
    assert_eq!(greeting("ada").await, "hello ada");
    assert_eq!(greeting("ada").await, "hello ada");
    assert_eq!(LOADS.load(Ordering::SeqCst), 2, "uncached without a cache");
    assert!(matches!(
        invalidate_greeting("ada").await,
        Err(Error::NotConfigured)
    ));

    let server = RedisServer::start();
    let cache = server.cache("global").await;
    cached_redis::set_global(cache.clone());
    assert_eq!(greeting("ada").await, "hello ada");
    cache.settle().await;
    assert_eq!(greeting("ada").await, "hello ada");
    assert_eq!(LOADS.load(Ordering::SeqCst), 3, "cached once installed");
    assert_eq!(cache.stats().hits, 1);
    assert!(invalidate_greeting("ada").await.unwrap());
}

#[redis_cached(key = "scoped:<n>", ttl = "60s")]
async fn scoped(n: u32) -> u32 {
    n
}

/// Two tests side by side, each with its own cache for the functions without `cache = ...`:
/// `with_cache` overrides the default for one future, so neither sees the other's entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cache_gives_each_future_its_own_default() {
    let server = RedisServer::start();
    let (a, b) = (server.cache("scope-a").await, server.cache("scope-b").await);
    let run = |cache: cached_redis::Cache| async move {
        let seen = cached_redis::with_cache(cache.clone(), async { cached_redis::global() }).await;
        assert_eq!(
            seen.map(|c| c.namespace().to_owned()).as_deref(),
            Some(cache.namespace())
        );
        let first = cached_redis::with_cache(cache.clone(), scoped(1)).await;
        cache.settle().await;
        let again = cached_redis::with_cache(cache.clone(), scoped(1)).await;
        (first, again, cache.stats().hits)
    };
    let (in_a, in_b) = tokio::join!(tokio::spawn(run(a.clone())), tokio::spawn(run(b.clone())));
    assert_eq!(in_a.unwrap(), (1, 1, 1), "a's own entry, hit in a");
    assert_eq!(in_b.unwrap(), (1, 1, 1), "b's own entry, hit in b");
    let mut conn = server.conn().await;
    assert_eq!(
        cached_redis_tests::scan_keys(&mut conn, "scope-*").await,
        ["scope-a:{scoped:1}", "scope-b:{scoped:1}"]
    );
}

/// A program that set up no logging still hears, once, that its cached functions run uncached
/// for want of a cache: on standard error. Run in a child process of this test binary, where
/// no test has installed a cache or a subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_logging_a_missing_cache_is_said_once_on_stderr() {
    const CHILD: &str = "CACHED_REDIS_UNCONFIGURED_CHILD";
    if std::env::var_os(CHILD).is_some() {
        for name in ["ada", "grace", "ada"] {
            greeting(name).await;
        }
        return;
    }
    let name = "without_logging_a_missing_cache_is_said_once_on_stderr";
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(child.status.success());
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert_eq!(stderr.matches("no cache configured").count(), 1, "{stderr}");
}
