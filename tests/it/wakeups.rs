//! Waiters and the subscriber connection: a waiter's wait is bounded by its own lease, whatever
//! the wake-up connection does; a lease that vanishes without a message is noticed; and
//! cancelled waiters leave no subscription on the server. The subscriber connection is put
//! behind a proxy whose replies the tests hold, so each window is open for as long as a test
//! needs, deterministically.

use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, Policy};
use cached_redis_tests::{Proxy, RedisServer, eventually, numsub, set_px};

fn policy() -> Policy {
    Policy::new("row", Duration::from_secs(60)).unwrap()
}

async fn cache_via(proxy: &Proxy, op_timeout: Duration) -> Cache {
    Cache::builder(&proxy.url())
        .namespace("wake")
        .op_timeout(op_timeout)
        .build()
        .await
        .unwrap()
}

/// A read of `key` through `cache` in the background, answering `version`.
fn read(cache: &Cache, key: &Key, version: u64) -> tokio::task::JoinHandle<Result<u64, String>> {
    let (cache, key) = (cache.clone(), key.clone());
    tokio::spawn(async move {
        let loader = async move { Ok::<_, String>(version) };
        cache.fetch(&key, &policy(), loader).await
    })
}

/// Makes the cache's subscriber connection exist, by one full wait, and returns its index
/// among the proxy's connections (the last one the wait opened: reads, writes, then it).
async fn warm_subscriber(
    cache: &Cache,
    proxy: &Proxy,
    admin: &mut redis::aio::MultiplexedConnection,
) -> usize {
    assert!(cache.ping().await.is_ok());
    let key = Key::raw("warm");
    let lease = format!("{}:lease", cache.redis_key(&key));
    set_px(admin, &lease, "someone-else", 60_000).await;
    let waiter = read(cache, &key, 0);
    let channel = format!("{}:wake", cache.redis_key(&key));
    assert!(
        eventually(Duration::from_secs(10), || async {
            numsub(&mut admin.clone(), &channel).await == 1
        })
        .await
    );
    let _: () = redis::cmd("DEL")
        .arg(&lease)
        .query_async(admin)
        .await
        .unwrap();
    let _: () = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg("released")
        .query_async(admin)
        .await
        .unwrap();
    assert_eq!(waiter.await.unwrap(), Ok(0));
    assert_eq!(proxy.connections(), 3, "reads, writes, then the subscriber");
    2
}

/// Item 7 of the hardening issue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_never_queue_behind_a_black_holed_subscriber_connection() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let op_timeout = Duration::from_millis(800);
    let cache = cache_via(&proxy, op_timeout).await;
    let mut admin = server.conn().await;
    let subscriber = warm_subscriber(&cache, &proxy, &mut admin).await;
    proxy.hold_replies(subscriber);

    // Ten keys whose leases another process holds for 1.5 s more and never renews.
    let lease_ms = 1_500;
    let keys: Vec<Key> = (0..10)
        .map(|i| Key::raw(format!("black-hole:{i}")))
        .collect();
    for key in &keys {
        set_px(
            &mut admin,
            &format!("{}:lease", cache.redis_key(key)),
            "gone",
            lease_ms,
        )
        .await;
    }
    let started = Instant::now();
    let waiters: Vec<_> = keys.iter().map(|key| read(&cache, key, 1)).collect();
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap(), Ok(1));
    }
    let took = started.elapsed();
    println!("10 waiters behind a black-holed subscriber: all answered after {took:?}");
    assert!(
        took < Duration::from_millis(lease_ms) + op_timeout,
        "each waiter is bounded by its own lease, not by the others' subscribes: {took:?}"
    );
    assert!(
        cache.ping().await.is_ok(),
        "the subscriber's trouble does not open the breaker"
    );
}

/// Item 8 of the hardening issue: `FLUSHALL` and an eviction remove a lease without a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_vanishes_without_a_message_is_noticed() {
    let server = RedisServer::start();
    let cache = server.cache("vanish").await;
    let mut admin = server.conn().await;
    for (i, how) in ["FLUSHALL", "eviction"].into_iter().enumerate() {
        let key = Key::raw(format!("vanish:{i}"));
        let lease = format!("{}:lease", cache.redis_key(&key));
        let channel = format!("{}:wake", cache.redis_key(&key));
        set_px(&mut admin, &lease, "another-process", 30_000).await;
        let waiter = read(&cache, &key, 7);
        assert!(
            eventually(Duration::from_secs(10), || async {
                numsub(&mut admin.clone(), &channel).await == 1
            })
            .await
        );
        let gone = Instant::now();
        match how {
            "FLUSHALL" => {
                let _: () = redis::cmd("FLUSHALL")
                    .query_async(&mut admin)
                    .await
                    .unwrap();
            }
            _ => evict_the_lease(&mut admin, &lease).await,
        }
        assert_eq!(waiter.await.unwrap(), Ok(7));
        let noticed = gone.elapsed();
        println!("lease removed by {how}: the waiter noticed after {noticed:?}");
        assert!(
            noticed < Duration::from_millis(1500),
            "a waiter notices a vanished lease long before its 30 s expiry: {noticed:?}"
        );
    }
}

/// Under `volatile-ttl`, which evicts the keys closest to expiry first, a write past
/// `maxmemory` evicts the lease (its TTL is the shortest) without any message.
async fn evict_the_lease(admin: &mut redis::aio::MultiplexedConnection, lease: &str) {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(admin)
        .await
        .unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    let control = admin.clone();
    let config = |name: &'static str, value: String| {
        let mut control = control.clone();
        async move {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query_async(&mut control)
                .await
                .unwrap();
        }
    };
    config("maxmemory-policy", "volatile-ttl".into()).await;
    config("maxmemory", (used + 256 * 1024).to_string()).await;
    // The write's own arguments take it past maxmemory: Redis evicts the lease before running
    // it, and refuses it (OOM) if that was not enough.
    let filler = vec![b'x'; 1024 * 1024];
    let _: redis::RedisResult<()> = redis::cmd("SET")
        .arg("filler")
        .arg(filler)
        .arg("EX")
        .arg(3600)
        .query_async(admin)
        .await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(lease)
        .query_async(admin)
        .await
        .unwrap();
    assert!(!exists, "the lease was evicted");
    config("maxmemory", "0".into()).await;
}

/// Item 9 of the hardening issue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_cancelled_mid_subscribe_leave_no_subscription_on_the_server() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = cache_via(&proxy, Duration::from_secs(5)).await;
    let mut admin = server.conn().await;
    let subscriber = warm_subscriber(&cache, &proxy, &mut admin).await;
    // The subscriber's replies are held: each SUBSCRIBE reaches Redis, its reply does not.
    proxy.hold_replies(subscriber);

    let keys: Vec<Key> = (0..20)
        .map(|i| Key::raw(format!("cancelled:{i}")))
        .collect();
    let channels: Vec<String> = keys
        .iter()
        .map(|k| format!("{}:wake", cache.redis_key(k)))
        .collect();
    for key in &keys {
        set_px(
            &mut admin,
            &format!("{}:lease", cache.redis_key(key)),
            "another",
            60_000,
        )
        .await;
    }
    let waiters: Vec<_> = keys.iter().map(|key| read(&cache, key, 1)).collect();
    let all_subscribed = eventually(Duration::from_secs(10), || async {
        let mut admin = admin.clone();
        for channel in &channels {
            if numsub(&mut admin, channel).await != 1 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(all_subscribed, "every waiter's SUBSCRIBE reached Redis");
    for waiter in &waiters {
        waiter.abort();
    }
    for waiter in waiters {
        assert!(waiter.await.unwrap_err().is_cancelled());
    }
    proxy.release_replies(subscriber);
    let settled = eventually(Duration::from_secs(5), || async {
        let mut admin = admin.clone();
        for channel in &channels {
            if numsub(&mut admin, channel).await != 0 {
                return false;
            }
        }
        cached_redis::__private::in_flight(&cache) == (0, 0)
    })
    .await;
    let left = {
        let mut n = 0;
        for channel in &channels {
            n += numsub(&mut admin, channel).await;
        }
        n
    };
    assert!(
        settled,
        "{left} of 20 channels still subscribed on the server, or waiters left in the registry: {:?}",
        cached_redis::__private::in_flight(&cache)
    );
}
