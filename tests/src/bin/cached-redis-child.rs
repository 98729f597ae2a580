//! A separate OS process that shares a Redis with a test. It builds its own cache and, through
//! the stampede protocol (`cached_redis_tests::run_when_released`), runs `tasks` concurrent
//! reads of one cold key and reports how many loads this process ran and each caller's latency.
//!
//! Usage: `cached-redis-child <redis-url[,url...]> <namespace> <id> <tasks> <loader-ms> <lock-ttl-ms>`
//! (several URLs: the nodes of a Redis Cluster)

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, redis_cached};

static CACHE: OnceLock<Cache> = OnceLock::new();
static LOADS: AtomicU64 = AtomicU64::new(0);

#[redis_cached(key = "shared:<id>", ttl = "60s", cache = CACHE.get().expect("cache is set"), skip = "loader_ms")]
async fn slow_value(id: u64, loader_ms: u64) -> Result<String, String> {
    LOADS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(loader_ms)).await;
    Ok(format!("value-{id}"))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, namespace, id, tasks, loader_ms, lock_ttl_ms] = args.as_slice() else {
        panic!(
            "usage: cached-redis-child <url> <namespace> <id> <tasks> <loader-ms> <lock-ttl-ms>"
        );
    };
    let id: u64 = id.parse().expect("id");
    let tasks: usize = tasks.parse().expect("tasks");
    let loader_ms: u64 = loader_ms.parse().expect("loader-ms");
    let lock_ttl = Duration::from_millis(lock_ttl_ms.parse().expect("lock-ttl-ms"));
    // Several comma-separated URLs name the nodes of a cluster.
    let builder = if url.contains(',') {
        Cache::cluster_builder(&url.split(',').collect::<Vec<_>>())
    } else {
        Cache::builder(url)
    };
    let cache = builder
        .namespace(namespace)
        .lock_ttl(lock_ttl)
        .build()
        .await
        .expect("cache");
    // Connected before "ready", so the measured calls do not include connecting.
    let connected = Instant::now();
    while cache.ping().await.is_err() && connected.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    CACHE.set(cache).expect("set once");

    let expected = format!("value-{id}");
    let call = || {
        let expected = expected.clone();
        async move { slow_value(id, loader_ms).await.as_deref() == Ok(expected.as_str()) }
    };
    cached_redis_tests::run_when_released(tasks, || LOADS.load(Ordering::SeqCst), call).await;
}
