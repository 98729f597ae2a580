//! The miss path in two round trips: a miss's caller gets the loaded value after the GET and
//! the lease, while the write-back lands in the background; later calls of the key in the
//! same process wait for it, and `Cache::settle` waits for all of them. The write-back's reply
//! is held at a proxy, so the window is as wide as the test wants.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cached_redis::{Cache, Key, Policy};
use cached_redis_tests::{Proxy, RedisServer, get_raw};

/// A cache through `proxy`, and the proxy's index of its writes connection.
async fn cache_and_writes(
    proxy: &Proxy,
    admin: &mut redis::aio::MultiplexedConnection,
    namespace: &str,
) -> (Cache, usize) {
    let builder = Cache::builder(&proxy.url()).namespace(namespace);
    proxy.cache_and_writes(admin, builder).await
}

fn policy() -> Policy {
    Policy::new("miss", Duration::from_secs(60)).unwrap()
}

/// Reads `key` through the cache, counting loads; the load answers `value` and first runs
/// `during`, which here holds the writes connection's replies.
async fn read(
    cache: &Cache,
    key: &Key,
    loads: &AtomicU32,
    value: u32,
    during: impl FnOnce(),
) -> Result<u32, String> {
    cache
        .fetch(key, &policy(), async {
            loads.fetch_add(1, Ordering::SeqCst);
            during();
            Ok(value)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_answers_before_its_write_back_and_the_next_call_reads_it() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut admin = server.conn().await;
    let (cache, writes) = cache_and_writes(&proxy, &mut admin, "miss-two").await;
    let (key, loads) = (Key::raw("row:1"), AtomicU32::new(0));

    // The lease is granted; the load holds the writes connection's replies: the write-back
    // reaches Redis but its reply does not come back until released.
    let hold = || proxy.hold_replies(writes);
    let answered =
        tokio::time::timeout(Duration::from_secs(10), read(&cache, &key, &loads, 1, hold)).await;
    assert_eq!(
        answered,
        Ok(Ok(1)),
        "the caller is answered without waiting for the write-back"
    );
    assert_eq!(
        cached_redis::__private::in_flight(&cache).0,
        1,
        "its write-back still runs"
    );

    // A later call of the key here waits for the write-back and reads what it stored.
    let later = tokio::spawn({
        let (cache, key) = (cache.clone(), key.clone());
        async move {
            let loads = AtomicU32::new(0);
            let value = read(&cache, &key, &loads, 2, || ()).await;
            (value, loads.into_inner())
        }
    });
    let settle = cache.settle();
    tokio::pin!(settle);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut settle)
            .await
            .is_err(),
        "settle waits for the held write-back"
    );
    assert!(!later.is_finished());
    proxy.release_replies(writes);
    settle.await;
    assert_eq!(later.await.unwrap(), (Ok(1), 0), "read, not loaded again");
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.hits), (2, 1), "{stats:?}"); // `warm`, then row:1
    assert!(get_raw(&mut admin, &cache.redis_key(&key)).await.is_some());
    cached_redis_tests::assert_no_state_left(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_while_the_write_back_is_held_is_not_undone() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut admin = server.conn().await;
    let (cache, writes) = cache_and_writes(&proxy, &mut admin, "miss-inval").await;
    let writer = server.cache("miss-inval").await; // another process, not behind the proxy
    let (key, loads) = (Key::raw("row:2"), AtomicU32::new(0));

    let hold = || proxy.hold_replies(writes);
    assert_eq!(read(&cache, &key, &loads, 1, hold).await, Ok(1));
    // The database changes and the writer invalidates while the write-back's reply is held.
    assert!(writer.invalidate(&key).await.unwrap());
    let later = tokio::spawn({
        let (cache, key) = (cache.clone(), key.clone());
        async move {
            let loads = AtomicU32::new(0);
            let value = read(&cache, &key, &loads, 2, || ()).await;
            (value, loads.into_inner())
        }
    });
    proxy.release_replies(writes);
    assert_eq!(
        later.await.unwrap(),
        (Ok(2), 1),
        "the value stored before the invalidation is not read"
    );
    cache.settle().await;
    let fresh: Result<u32, String> = writer.fetch(&key, &policy(), async { Ok(3) }).await;
    assert_eq!(fresh, Ok(2), "the fresh load is what Redis holds");
}

/// An update of a key whose write-back Redis has not answered waits for it at most
/// `op_timeout`, then sends its first round within `op_timeout`: with Redis answering neither,
/// it returns an error within twice `op_timeout` (the bound `guide/helpers.md` states).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_behind_a_stalled_write_back_errs_within_twice_op_timeout() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let mut admin = server.conn().await;
    let op_timeout = Duration::from_millis(400);
    let builder = Cache::builder(&proxy.url())
        .namespace("miss-update-stalled")
        .op_timeout(op_timeout);
    let (cache, writes) = proxy.cache_and_writes(&mut admin, builder).await;
    let key = Key::raw("row:3");
    let loaded = proxy.miss_holding_write_back(&cache, writes, &key, 1).await;
    assert_eq!(loaded, Ok(1));

    let started = std::time::Instant::now();
    let updated = cache.update::<u64>(&key, |value| *value += 1).await;
    let took = started.elapsed();
    assert!(updated.is_err(), "{updated:?}");
    assert!(
        took < op_timeout * 2 + Duration::from_millis(300),
        "an update behind a stalled write-back took {took:?} (op_timeout {op_timeout:?})"
    );
    proxy.release_replies(writes);
}
