//! The lease after a `GET` that found no value: `SET NX` and a `GET`, pipelined, in place of the
//! lease script (`lease/after_miss.rs`). The pair is not atomic; a value stored between the
//! call's `GET` and its `SET NX` must still answer the call without a second load. The window
//! is held open at a proxy: the call's `GET` reply waits there while another process loads
//! and stores.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cached_redis::{Cache, Key, Policy};
use cached_redis_tests::{
    Gate, Proxy, RedisServer, assert_no_state_left, command_calls, eventually, get_raw,
};

fn policy() -> Policy {
    Policy::new("after-miss", Duration::from_secs(60)).unwrap()
}

/// Reads `key` through `cache`, counting loads; the load answers `value`.
async fn read(cache: &Cache, key: &Key, loads: &AtomicU32, value: u32) -> Result<u32, String> {
    cache
        .fetch(key, &policy(), async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(value)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_among_hits_takes_the_lease_without_the_lease_script() {
    let server = RedisServer::start();
    let cache = server.cache("after-miss-cost").await;
    let mut admin = server.conn().await;
    let loads = AtomicU32::new(0);
    let warm = Key::raw("warm");
    assert_eq!(read(&cache, &warm, &loads, 1).await, Ok(1));
    cache.settle().await;
    for _ in 0..9 {
        assert_eq!(read(&cache, &warm, &loads, 1).await, Ok(1));
    }

    let (scripts, sets) = (
        command_calls(&mut admin, "evalsha").await,
        command_calls(&mut admin, "set").await,
    );
    assert_eq!(read(&cache, &Key::raw("cold"), &loads, 2).await, Ok(2));
    cache.settle().await;
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    assert_eq!(
        command_calls(&mut admin, "evalsha").await - scripts,
        1,
        "the write-back is the miss's only script: the lease was taken by SET NX"
    );
    // The lease's `SET NX`, and the write-back script's `SET` of the value.
    assert_eq!(command_calls(&mut admin, "set").await - sets, 2);
    assert_eq!(read(&cache, &Key::raw("cold"), &loads, 3).await, Ok(2));
    assert_no_state_left(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_stored_between_the_get_and_the_lease_answers_without_a_second_load() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut admin = server.conn().await;
    let builder = Cache::builder(&proxy.url()).namespace("after-miss-gap");
    let (cache, _writes) = proxy.cache_and_writes(&mut admin, builder).await;
    let reads = proxy
        .connection_of_client(&mut admin, |f| f.contains(&"cmd=get"))
        .await
        .expect("the reads connection");
    let other = server.cache("after-miss-gap").await; // another process, not behind the proxy
    let key = Key::raw("row:1");
    let loads = Arc::new(AtomicU32::new(0));

    // The call's GET reaches Redis (no value yet) and its reply waits at the proxy.
    proxy.hold_replies(reads);
    let gets = command_calls(&mut admin, "get").await;
    let call = tokio::spawn({
        let (cache, key, loads) = (cache.clone(), key.clone(), loads.clone());
        async move { read(&cache, &key, &loads, 1).await }
    });
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut admin = admin.clone();
            async move { command_calls(&mut admin, "get").await > gets }
        })
        .await,
        "the call's GET reached Redis"
    );
    // Meanwhile another process loads the key and stores it, lease and all.
    let other_loads = AtomicU32::new(0);
    assert_eq!(read(&other, &key, &other_loads, 2).await, Ok(2));
    other.settle().await;
    assert!(get_raw(&mut admin, &other.redis_key(&key)).await.is_some());

    // The GET's "no value" arrives now: the lease it goes for must not become a second load.
    proxy.release_replies(reads);
    let answered = tokio::time::timeout(Duration::from_secs(10), call).await;
    assert_eq!(
        answered.expect("answered").unwrap(),
        Ok(2),
        "the stored value answers"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 0, "no second load");
    // The lease the pipeline took for nothing is given back.
    let lease = format!("{}:lease", cache.redis_key(&key));
    assert!(
        eventually(Duration::from_secs(5), || {
            let (mut admin, lease) = (admin.clone(), lease.clone());
            async move { get_raw(&mut admin, &lease).await.is_none() }
        })
        .await,
        "the lease is given back"
    );
    assert_no_state_left(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_by_another_process_is_waited_for_after_the_pipeline() {
    let server = RedisServer::start();
    let (holder, waiter) = (
        server.cache("after-miss-held").await,
        server.cache("after-miss-held").await,
    );
    let admin = server.conn().await;
    let key = Key::raw("row:2");
    let lease = format!("{}:lease", holder.redis_key(&key));
    let gate = Gate::new();
    let loading = tokio::spawn({
        let (holder, key, gate) = (holder.clone(), key.clone(), gate.clone());
        async move {
            let loaded: Result<u32, String> = holder
                .fetch(&key, &policy(), async move {
                    gate.passed().await;
                    Ok(5)
                })
                .await;
            loaded
        }
    });
    assert!(
        eventually(Duration::from_secs(5), || {
            let (mut admin, lease) = (admin.clone(), lease.clone());
            async move { get_raw(&mut admin, &lease).await.is_some() }
        })
        .await,
        "the holder took the lease"
    );
    let loads = Arc::new(AtomicU32::new(0));
    let waiting = tokio::spawn({
        let (waiter, key, loads) = (waiter.clone(), key.clone(), loads.clone());
        async move { read(&waiter, &key, &loads, 6).await }
    });
    assert!(
        eventually(Duration::from_secs(5), || async {
            waiter.stats().lock_waits >= 1
        })
        .await,
        "the second process waits for the holder: {:?}",
        waiter.stats()
    );
    gate.open();
    assert_eq!(loading.await.unwrap(), Ok(5));
    assert_eq!(waiting.await.unwrap(), Ok(5), "the holder's value");
    assert_eq!(loads.load(Ordering::SeqCst), 0, "one load in all");
    assert_no_state_left(&waiter).await;
}
