//! Reads through [`Cache::fetch`] whose loads are counted: what the adversarial suites race
//! against each other, against faults and against Redis's own changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, Policy};

/// The policy of every counted read: a minute's TTL.
pub fn policy() -> Policy {
    Policy::new("counted", Duration::from_secs(60)).expect("a valid policy")
}

/// Reads `key` through `cache`, counting loads in `loads`; the load answers `value`.
pub async fn read(cache: &Cache, key: &Key, loads: &AtomicU32, value: u32) -> Result<u32, String> {
    cache
        .fetch(key, &policy(), async {
            loads.fetch_add(1, SeqCst);
            Ok(value)
        })
        .await
}

/// [`read`] in a task of its own.
pub fn spawn_read(
    cache: &Cache,
    key: &Key,
    loads: &Arc<AtomicU32>,
    value: u32,
) -> tokio::task::JoinHandle<Result<u32, String>> {
    let (cache, key, loads) = (cache.clone(), key.clone(), loads.clone());
    tokio::spawn(async move { read(&cache, &key, &loads, value).await })
}

/// [`read`] in a task of its own, answering how long it took too.
pub fn spawn_timed_read(
    cache: &Cache,
    key: &Key,
    loads: &Arc<AtomicU32>,
    value: u32,
) -> tokio::task::JoinHandle<(Result<u32, String>, Duration)> {
    let (cache, key, loads) = (cache.clone(), key.clone(), loads.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let got = read(&cache, &key, &loads, value).await;
        (got, started.elapsed())
    })
}
