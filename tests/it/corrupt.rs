//! Guarantee 6: a stored value that does not decode (garbage, or the type changed shape) is a
//! miss: the loader runs, the entry is overwritten, a warning is logged, and the caller never
//! sees an error.

use cached_redis::{Cache, Key, redis_cached};
use cached_redis_tests::{RedisServer, get_raw};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Account {
    id: u32,
    balance: i64,
}

#[redis_cached(key = "account:<id>", ttl = "60s", cache = cache)]
async fn account(cache: &Cache, id: u32) -> Result<Account, String> {
    Ok(Account { id, balance: 100 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_values_are_misses_that_get_overwritten() {
    let server = RedisServer::start();
    let cache = server.cache("corrupt").await;
    let mut conn = server.conn().await;
    let cases: [&[u8]; 4] = [
        b"garbage",
        br#"{"v":"an old shape"}"#,
        br#"{"v":{"id":1}}"#,
        &[0xff, 0xfe, 0x00],
    ];
    for (n, bytes) in cases.into_iter().enumerate() {
        let id = n as u32;
        let key = cache.redis_key(&Key::builder().text("account:").part(&id).build());
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(bytes)
            .query_async(&mut conn)
            .await
            .unwrap();

        assert_eq!(account(&cache, id).await, Ok(Account { id, balance: 100 }));
        cache.settle().await;
        let stored = get_raw(&mut conn, &key).await.unwrap();
        assert!(
            stored.starts_with(br#"{"v":{"id":"#),
            "overwritten: {:?}",
            String::from_utf8_lossy(&stored)
        );
        assert_eq!(
            account(&cache, id).await,
            Ok(Account { id, balance: 100 }),
            "then a hit"
        );
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.loads, stats.decode_errors, stats.hits),
        (4, 4, 4),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_on_a_corrupt_value_still_load_once() {
    let server = RedisServer::start();
    let cache = server.cache("corrupt-many").await;
    let mut conn = server.conn().await;
    let id = 77;
    let key = cache.redis_key(&Key::builder().text("account:").part(&id).build());
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let other = server.cache("corrupt-many").await; // a second process
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let cache = if i % 2 == 0 {
                cache.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move { account(&cache, id).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), Ok(Account { id, balance: 100 }));
    }
    let loads = cache.stats().loads + other.stats().loads;
    assert_eq!(loads, 1, "one load replaces the corrupt value");
}
