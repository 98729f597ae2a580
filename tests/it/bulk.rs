//! Prefix invalidation and `clear()` are race-free: after either returns `Ok`, no read of a
//! matching entry returns a value loaded before the call began, even when a load's write-back
//! lands in the middle of the SCAN (its value created behind the cursor, its lease deleted
//! ahead of it). And a prefix longer than the readable part of a hashed long key still matches
//! that key.

use std::sync::Arc;
use std::time::Duration;

use cached_redis::{Cache, Key, Policy};
use cached_redis_tests::{Proxy, RedisServer, command_calls, eventually, get_raw, scan_keys};

const FILLERS: usize = 1500;

async fn cmd<T: redis::FromRedisValue>(
    conn: &mut redis::aio::MultiplexedConnection,
    cmd: &mut redis::Cmd,
) -> T {
    cmd.query_async(conn).await.unwrap()
}

/// The keys the first `SCAN 0 MATCH pattern COUNT 500` returns, and its cursor.
async fn first_batch(
    conn: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> (u64, Vec<String>) {
    cmd(
        conn,
        redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500),
    )
    .await
}

/// An entry name whose value key, once it exists, comes in the first SCAN batch while its
/// lease key does not: a write-back between the first batch and the next creates the value
/// behind the cursor and deletes the lease ahead of it.
async fn entry_straddling_the_cursor(
    cache: &Cache,
    conn: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> Key {
    for i in 0..2000 {
        let key = Key::raw(format!("user:target{i}"));
        let value = cache.redis_key(&key);
        let lease = format!("{value}:lease");
        let _: () = cmd(conn, redis::cmd("SET").arg(&lease).arg("probe")).await;
        let (_, lease_only) = first_batch(conn, pattern).await;
        let _: () = cmd(conn, redis::cmd("SET").arg(&value).arg("probe")).await;
        let (_, both) = first_batch(conn, pattern).await;
        let _: () = cmd(conn, redis::cmd("DEL").arg(&value).arg(&lease)).await;
        if !lease_only.contains(&lease) && !both.contains(&lease) && both.contains(&value) {
            return key;
        }
    }
    panic!("no entry straddles the first SCAN batch's cursor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_back_during_the_scan_leaves_no_stale_entry() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let loader_cache = server.cache("bulk").await;
    let invalidator = Cache::builder(&proxy.url())
        .namespace("bulk")
        .op_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let mut admin = server.conn().await;
    let mut fill = redis::pipe();
    for i in 0..FILLERS {
        fill.set(format!("bulk:{{user:filler{i}}}"), "x").ignore();
    }
    let _: () = fill.query_async(&mut admin).await.unwrap();
    let pattern = "bulk:{user:*";
    let key = entry_straddling_the_cursor(&loader_cache, &mut admin, pattern).await;

    // A load of the entry holds its lease, having read the database before the write.
    let policy = Policy::new("user", Duration::from_secs(60)).unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let load = {
        let (cache, key, release) = (loader_cache.clone(), key.clone(), release.clone());
        tokio::spawn(async move {
            let loader = async move {
                release.notified().await;
                Ok::<_, String>("before the write".to_owned())
            };
            cache.fetch(&key, &policy, loader).await
        })
    };
    let lease = format!("{}:lease", loader_cache.redis_key(&key));
    assert!(
        eventually(Duration::from_secs(5), || async {
            get_raw(&mut admin.clone(), &lease).await.is_some()
        })
        .await
    );

    let (_, batch) = first_batch(&mut admin, pattern).await;
    assert!(
        !batch.contains(&lease),
        "the lease is ahead of the first batch's cursor"
    );

    // The write, then its prefix invalidation, whose first SCAN batch is answered but held.
    assert!(invalidator.ping().await.is_ok());
    proxy.hold_replies(0);
    let scans_before = command_calls(&mut admin, "scan").await;
    let invalidation = {
        let invalidator = invalidator.clone();
        tokio::spawn(async move { invalidator.invalidate_prefix("user:").await })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            command_calls(&mut admin.clone(), "scan").await > scans_before
        })
        .await,
        "the first SCAN reached Redis"
    );
    // The load finishes now: its value lands behind the cursor, its lease goes ahead of it.
    release.notify_one();
    assert_eq!(load.await.unwrap().as_deref(), Ok("before the write"));
    proxy.release_replies(0);
    let removed = invalidation
        .await
        .unwrap()
        .expect("the invalidation succeeded");
    assert!(removed >= FILLERS as u64, "{removed}");

    let stale = get_raw(&mut admin, &loader_cache.redis_key(&key)).await;
    assert!(
        stale.is_none(),
        "after invalidate_prefix returned Ok, the entry loaded before it is still cached: {:?}",
        stale.map(|v| String::from_utf8_lossy(&v).into_owned())
    );
    assert!(scan_keys(&mut admin, pattern).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_longer_than_a_hashed_keys_readable_part_still_matches_it() {
    let server = RedisServer::start();
    let cache = server.cache("long").await;
    let policy = Policy::new("doc", Duration::from_secs(60)).unwrap();
    let long = format!("doc:{}", "a".repeat(400));
    let other = format!("doc:{}b", "a".repeat(200));
    for text in [&long, &other] {
        let key = Key::builder().text(text).build();
        assert!(key.as_str().len() <= cached_redis::MAX_KEY_LEN, "hashed");
        let value: Result<u32, String> = cache.fetch(&key, &policy, async { Ok(1) }).await;
        assert_eq!(value, Ok(1));
    }
    let prefix = &long[..300];
    let removed = cache.invalidate_prefix(prefix).await.unwrap();
    let mut admin = server.conn().await;
    let key = Key::builder().text(&long).build();
    assert!(removed >= 1, "removed {removed}");
    assert!(
        get_raw(&mut admin, &cache.redis_key(&key)).await.is_none(),
        "the hashed key whose full text starts with the prefix is gone"
    );
}
