//! Adversarial tests of the lease taken after a `GET` that found no value: `SET NX` and a
//! `GET`, pipelined (`lease/after_miss.rs`), in place of the lease script. Every window is
//! held open deterministically: a call's `GET` (or `MGET`) reply waits at a proxy, a loader
//! waits at a gate, or a writes connection's replies are held.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key};
use cached_redis_tests::counted::{policy, read, spawn_read};
use cached_redis_tests::{
    Gate, Proxy, RedisServer, command_calls, config_set, eventually, exists, get_raw,
};

/// A guard against hangs only: every test finishes in seconds.
const HANG: Duration = Duration::from_secs(30);

/// A cache in `namespace` through a proxy of its own, with its reads and writes connections'
/// indexes at the proxy.
struct Proxied {
    proxy: Proxy,
    cache: Cache,
    reads: usize,
    writes: usize,
}

async fn proxied(
    server: &RedisServer,
    admin: &mut redis::aio::MultiplexedConnection,
    namespace: &str,
    lock_ttl: Duration,
    op_timeout: Duration,
) -> Proxied {
    let proxy = Proxy::start(server.port()).await;
    let builder = Cache::builder(&proxy.url())
        .namespace(namespace)
        .lock_ttl(lock_ttl)
        .op_timeout(op_timeout);
    let (cache, writes) = proxy.cache_and_writes(admin, builder).await;
    // The next cache of the namespace misses `warm` too (that is how its writes connection
    // is found), and every script the tests need is in Redis's cache: a failed load gives
    // its lease back with the release script.
    let _: () = redis::cmd("DEL")
        .arg(cache.redis_key(&Key::raw("warm")))
        .query_async(admin)
        .await
        .unwrap();
    let failed: Result<u32, String> = cache
        .fetch(&Key::raw("warm-release"), &policy(), async {
            Err("no".to_owned())
        })
        .await;
    assert!(failed.is_err());
    cache.settle().await;
    let reads = proxy
        .connection_of_client(admin, |f| f.contains(&"cmd=get"))
        .await
        .expect("the reads connection");
    Proxied {
        proxy,
        cache,
        reads,
        writes,
    }
}

impl Proxied {
    /// A read of `key` in a task of its own, returned once its `GET` has reached Redis, the
    /// reply held at the proxy until [`Proxy::release_replies`] of `self.reads`.
    async fn read_held_at_get(
        &self,
        admin: &mut redis::aio::MultiplexedConnection,
        (key, loads, value): (&Key, &Arc<AtomicU32>, u32),
    ) -> tokio::task::JoinHandle<Result<u32, String>> {
        self.proxy.hold_replies(self.reads);
        let gets = command_calls(admin, "get").await;
        let call = spawn_read(&self.cache, key, loads, value);
        ran(admin, "get", gets).await;
        call
    }
}

/// Waits until Redis has run `command` more than `before` times.
async fn ran(admin: &redis::aio::MultiplexedConnection, command: &str, before: u64) {
    let reached = eventually(Duration::from_secs(5), || {
        let mut admin = admin.clone();
        async move { command_calls(&mut admin, command).await > before }
    })
    .await;
    assert!(reached, "{command} reached Redis");
}

/// Waits until `key` is gone (a lease given back in the background): whether it went.
async fn gone_within(
    admin: &redis::aio::MultiplexedConnection,
    key: &str,
    within: Duration,
) -> bool {
    eventually(within, || {
        let (mut admin, key) = (admin.clone(), key.to_owned());
        async move { !exists(&mut admin, &key).await }
    })
    .await
}

fn lease_of(cache: &Cache, key: &Key) -> String {
    format!("{}:lease", cache.redis_key(key))
}

/// Two processes whose `GET`s both found the key cold, their replies held at their proxies
/// until both `GET`s ran; let go together, both send `SET NX` and `GET`. One takes the lease
/// and loads, the other finds it held (or the value) and takes the first one's value: one
/// load in all, both answered the same, no lease left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_two_processes_cold_together_load_once() {
    tokio::time::timeout(HANG, async {
        let server = RedisServer::start();
        let mut admin = server.conn().await;
        let ns = "adv-after-miss-two";
        let long = Duration::from_secs(30);
        let a = proxied(&server, &mut admin, ns, long, Duration::from_secs(5)).await;
        let b = proxied(&server, &mut admin, ns, long, Duration::from_secs(5)).await;
        let key = Key::raw("row:two");
        let loads = Arc::new(AtomicU32::new(0));

        let in_a = a.read_held_at_get(&mut admin, (&key, &loads, 1)).await;
        let in_b = b.read_held_at_get(&mut admin, (&key, &loads, 2)).await;
        let sets = command_calls(&mut admin, "set").await;
        a.proxy.release_replies(a.reads);
        b.proxy.release_replies(b.reads);

        let (got_a, got_b) = (in_a.await.unwrap(), in_b.await.unwrap());
        assert_eq!(loads.load(SeqCst), 1, "one load across processes");
        assert_eq!(got_a, got_b, "both answered the one load's value");
        assert!(
            command_calls(&mut admin, "set").await >= sets + 2,
            "both took the pipelined path"
        );
        a.cache.settle().await;
        b.cache.settle().await;
        assert!(
            gone_within(&admin, &lease_of(&a.cache, &key), Duration::from_secs(3)).await,
            "no lease left"
        );
        let stored = get_raw(&mut admin, &a.cache.redis_key(&key)).await;
        assert!(stored.is_some(), "the value is stored");
    })
    .await
    .expect("bounded");
}

/// A caller dropped while its `SET NX` and `GET` are in flight: the `SET NX` reached Redis
/// and took the lease, its reply is held at the proxy (requests still pass). The dropped
/// claim is armed, so the lease is given back in the background, and another process's read
/// loads at once, not after `lock_ttl` (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_caller_dropped_with_the_pipeline_in_flight_gives_the_lease_back() {
    tokio::time::timeout(HANG, async {
        let server = RedisServer::start();
        let mut admin = server.conn().await;
        let ns = "adv-after-miss-drop";
        let lock_ttl = Duration::from_secs(30);
        let a = proxied(&server, &mut admin, ns, lock_ttl, Duration::from_secs(10)).await;
        let other = server.cache(ns).await;
        let key = Key::raw("row:drop");
        let lease = lease_of(&a.cache, &key);
        let loads = Arc::new(AtomicU32::new(0));

        a.proxy.hold_replies(a.writes);
        let call = spawn_read(&a.cache, &key, &loads, 1);
        assert!(
            eventually(Duration::from_secs(5), || {
                let (mut admin, lease) = (admin.clone(), lease.clone());
                async move { exists(&mut admin, &lease).await }
            })
            .await,
            "the call's SET NX took the lease"
        );
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
        assert!(
            gone_within(&admin, &lease, Duration::from_secs(5)).await,
            "the dropped caller's lease is given back (its reply is still held)"
        );
        let started = Instant::now();
        let other_loads = AtomicU32::new(0);
        assert_eq!(read(&other, &key, &other_loads, 2).await, Ok(2));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the other process waited {:?}",
            started.elapsed()
        );
        assert_eq!(other_loads.load(SeqCst), 1);
        assert_eq!(loads.load(SeqCst), 0, "the dropped caller never loaded");
        a.proxy.release_replies(a.writes);
    })
    .await
    .expect("bounded");
}

/// The value key turned into a list between the call's `GET` (no value) and its pipeline:
/// the `SET NX` takes the lease, the `GET` answers `WRONGTYPE`, and the lease script, asked
/// next with the same token, finds the lease its own. One load; the write-back replaces the
/// list; no lease left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_list_at_the_value_key_between_get_and_pipeline() {
    tokio::time::timeout(HANG, async {
        let server = RedisServer::start();
        let mut admin = server.conn().await;
        let ns = "adv-after-miss-list";
        let a = proxied(
            &server,
            &mut admin,
            ns,
            Duration::from_secs(30),
            Duration::from_secs(5),
        )
        .await;
        let key = Key::raw("row:list");
        let value_key = a.cache.redis_key(&key);
        let loads = Arc::new(AtomicU32::new(0));

        let call = a.read_held_at_get(&mut admin, (&key, &loads, 7)).await;
        let _: () = redis::cmd("LPUSH")
            .arg(&value_key)
            .arg("x")
            .query_async(&mut admin)
            .await
            .unwrap();
        a.proxy.release_replies(a.reads);
        let started = Instant::now();
        assert_eq!(call.await.unwrap(), Ok(7));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "no wait on itself"
        );
        assert_eq!(loads.load(SeqCst), 1);
        a.cache.settle().await;
        let kind: String = redis::cmd("TYPE")
            .arg(&value_key)
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(kind, "string", "the write-back replaced the list");
        assert!(gone_within(&admin, &lease_of(&a.cache, &key), Duration::from_secs(3)).await);
        assert_eq!(read(&a.cache, &key, &loads, 8).await, Ok(7), "a hit now");
    })
    .await
    .expect("bounded");
}

/// An invalidation between the call's `GET` and its pipeline, after another process stored
/// the old value: the pipeline finds nothing, the call loads the new data; and an
/// invalidation while that load runs (under the lease the `SET NX` took) refuses its
/// write-back. A read that starts after each invalidation returned never gets an older value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_invalidations_around_the_pipeline_leave_nothing_stale() {
    tokio::time::timeout(HANG, async {
        let server = RedisServer::start();
        let mut admin = server.conn().await;
        let ns = "adv-after-miss-inval";
        let a = proxied(
            &server,
            &mut admin,
            ns,
            Duration::from_secs(30),
            Duration::from_secs(5),
        )
        .await;
        let other = server.cache(ns).await;
        let key = Key::raw("row:inval");
        let db = Arc::new(AtomicU32::new(1));

        // The call's GET finds nothing; its reply waits.
        a.proxy.hold_replies(a.reads);
        let gets = command_calls(&mut admin, "get").await;
        let gate = Gate::new();
        let read_at_load = Arc::new(AtomicU32::new(0));
        let call = tokio::spawn({
            let (cache, key, db, gate, read_at_load) = (
                a.cache.clone(),
                key.clone(),
                db.clone(),
                gate.clone(),
                read_at_load.clone(),
            );
            async move {
                let got: Result<u32, String> = cache
                    .fetch(&key, &policy(), async move {
                        let seen = db.load(SeqCst);
                        read_at_load.store(seen, SeqCst);
                        gate.passed().await;
                        Ok(seen)
                    })
                    .await;
                got
            }
        });
        ran(&admin, "get", gets).await;
        // Another process stores version 1; then the data changes and is invalidated.
        let no_loads = AtomicU32::new(0);
        assert_eq!(read(&other, &key, &no_loads, 1).await, Ok(1));
        other.settle().await;
        db.store(2, SeqCst);
        assert!(other.invalidate(&key).await.unwrap());
        a.proxy.release_replies(a.reads);
        // The call's pipeline found nothing: it loads (version 2) under its lease.
        assert!(
            eventually(Duration::from_secs(5), || async {
                read_at_load.load(SeqCst) != 0
            })
            .await,
            "the call loads"
        );
        assert_eq!(read_at_load.load(SeqCst), 2, "its load read the new data");
        // The data changes again while that load runs.
        db.store(3, SeqCst);
        assert!(!other.invalidate(&key).await.unwrap(), "nothing stored yet");
        gate.open();
        assert_eq!(call.await.unwrap(), Ok(2), "its own load's value");
        a.cache.settle().await;
        assert!(
            get_raw(&mut admin, &a.cache.redis_key(&key))
                .await
                .is_none(),
            "the revoked load stored nothing"
        );
        let fresh = AtomicU32::new(0);
        assert_eq!(read(&other, &key, &fresh, 3).await, Ok(3));
        assert_eq!(fresh.load(SeqCst), 1);
    })
    .await
    .expect("bounded");
}

/// Redis starts refusing writes (`maxmemory 1`, `noeviction`) between the call's `GET` and
/// its pipeline: the `SET NX` answers `OOM`, the lease script after it too; the call answers
/// with its loader's value at once, nothing is stored and no lease is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_writes_refused_between_get_and_pipeline() {
    tokio::time::timeout(HANG, async {
        let server = RedisServer::start();
        let mut admin = server.conn().await;
        let ns = "adv-after-miss-oom";
        let a = proxied(
            &server,
            &mut admin,
            ns,
            Duration::from_secs(30),
            Duration::from_secs(5),
        )
        .await;
        let key = Key::raw("row:oom");
        let loads = Arc::new(AtomicU32::new(0));

        let call = a.read_held_at_get(&mut admin, (&key, &loads, 9)).await;
        config_set(&mut admin, "maxmemory-policy", "noeviction").await;
        config_set(&mut admin, "maxmemory", "1").await;
        a.proxy.release_replies(a.reads);
        let started = Instant::now();
        assert_eq!(call.await.unwrap(), Ok(9));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(loads.load(SeqCst), 1);
        a.cache.settle().await;
        assert!(
            !exists(&mut admin, &lease_of(&a.cache, &key)).await,
            "no lease"
        );
        assert!(
            get_raw(&mut admin, &a.cache.redis_key(&key))
                .await
                .is_none()
        );
        config_set(&mut admin, "maxmemory", "0").await;
    })
    .await
    .expect("bounded");
}

/// A batch whose `MGET` reply is held while another process stores id 2 and starts loading
/// id 3 (its loader at a gate, its lease held). Let go: id 1 is loaded by the batch, id 2 is
/// answered by the value its pipeline's `GET` found (the lease taken for nothing is given
/// back), id 3 waits for the other process's load. The batch's loader sees exactly `[1]`,
/// and no lease is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_batch_with_ids_stored_and_leased_meanwhile() {
    tokio::time::timeout(HANG, async {
        let server = RedisServer::start();
        let mut admin = server.conn().await;
        let ns = "adv-after-miss-batch";
        let a = proxied(&server, &mut admin, ns, Duration::from_secs(30), Duration::from_secs(5))
            .await;
        let other = server.cache(ns).await;
        let key_of = |id: &u32| Key::builder().text("item:").part(id).build();
        let calls: Arc<std::sync::Mutex<Vec<Vec<u32>>>> = Arc::default();

        a.proxy.hold_replies(a.reads);
        let mgets = command_calls(&mut admin, "mget").await;
        let batch = tokio::spawn({
            let (cache, calls) = (a.cache.clone(), calls.clone());
            async move {
                let load = move |ids: Vec<u32>| {
                    let mut sorted = ids.clone();
                    sorted.sort_unstable();
                    calls.lock().unwrap().push(sorted);
                    async move {
                        Ok::<_, String>(ids.into_iter().map(|id| (id, 100 + id)).collect())
                    }
                };
                let found: Result<HashMap<u32, u32>, String> =
                    cache.fetch_many([1, 2, 3], key_of, &policy(), load).await;
                found
            }
        });
        ran(&admin, "mget", mgets).await;
        // Another process stores id 2, and starts loading id 3.
        let other_loads = AtomicU32::new(0);
        assert_eq!(read(&other, &key_of(&2), &other_loads, 202).await, Ok(202));
        other.settle().await;
        let gate = Gate::new();
        let loading = tokio::spawn({
            let (other, gate) = (other.clone(), gate.clone());
            async move {
                let got: Result<u32, String> = other
                    .fetch(&key_of(&3), &policy(), async move {
                        gate.passed().await;
                        Ok(203)
                    })
                    .await;
                got
            }
        });
        let lease3 = lease_of(&other, &key_of(&3));
        assert!(
            eventually(Duration::from_secs(5), || {
                let (mut admin, lease) = (admin.clone(), lease3.clone());
                async move { exists(&mut admin, &lease).await }
            })
            .await
        );
        let waits = a.cache.stats().lock_waits;
        a.proxy.release_replies(a.reads);
        assert!(
            eventually(Duration::from_secs(5), || async {
                a.cache.stats().lock_waits > waits
            })
            .await,
            "the batch waits for id 3: {:?}",
            a.cache.stats()
        );
        gate.open();
        assert_eq!(loading.await.unwrap(), Ok(203));
        let found = batch.await.unwrap().unwrap();
        let expected: HashMap<u32, u32> = [(1, 101), (2, 202), (3, 203)].into_iter().collect();
        assert_eq!(found, expected);
        assert_eq!(*calls.lock().unwrap(), vec![vec![1]], "only id 1 was loaded");
        a.cache.settle().await;
        for id in [1, 2, 3] {
            assert!(
                gone_within(&admin, &lease_of(&a.cache, &key_of(&id)), Duration::from_secs(3))
                    .await,
                "no lease left for id {id}"
            );
        }
    })
    .await
    .expect("bounded");
}

/// Undecodable bytes written to the value key between the call's `GET` (no value) and its
/// pipeline: the `SET NX` takes the lease and the `GET` brings the bytes back; they do not
/// decode, so the lease script is asked with them as known-corrupt, finds the lease its own
/// (same token) and the call loads at once, without waiting on itself; the write-back
/// replaces the bytes and no lease is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_undecodable_bytes_between_get_and_pipeline() {
    tokio::time::timeout(HANG, async {
        let server = RedisServer::start();
        let mut admin = server.conn().await;
        let ns = "adv-after-miss-garbage";
        let a = proxied(
            &server,
            &mut admin,
            ns,
            Duration::from_secs(30),
            Duration::from_secs(5),
        )
        .await;
        let key = Key::raw("row:garbage");
        let value_key = a.cache.redis_key(&key);
        let loads = Arc::new(AtomicU32::new(0));

        let call = a.read_held_at_get(&mut admin, (&key, &loads, 5)).await;
        let _: () = redis::cmd("SET")
            .arg(&value_key)
            .arg(b"\xff\x00garbage".as_slice())
            .query_async(&mut admin)
            .await
            .unwrap();
        a.proxy.release_replies(a.reads);
        let started = Instant::now();
        assert_eq!(call.await.unwrap(), Ok(5));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(loads.load(SeqCst), 1);
        a.cache.settle().await;
        assert_eq!(
            read(&a.cache, &key, &loads, 6).await,
            Ok(5),
            "replaced: a hit"
        );
        assert!(gone_within(&admin, &lease_of(&a.cache, &key), Duration::from_secs(3)).await);
    })
    .await
    .expect("bounded");
}

/// The same in a batch: its `MGET` reply held, undecodable bytes written to id 2's key. Id
/// 2's pipeline takes the lease and finds the bytes; its claim, dropped, gives that lease
/// back in the background while the id goes the single read's way with the bytes as
/// known-corrupt under a new token. It must not wait for its own abandoned lease's
/// `lock_ttl` (30 s): it is loaded alone, the batch loads id 1, and no lease is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_undecodable_bytes_between_mget_and_pipeline_in_a_batch() {
    tokio::time::timeout(HANG, async {
        let server = RedisServer::start();
        let mut admin = server.conn().await;
        let ns = "adv-after-miss-batch-garbage";
        let a = proxied(&server, &mut admin, ns, Duration::from_secs(30), Duration::from_secs(5))
            .await;
        let key_of = |id: &u32| Key::builder().text("item:").part(id).build();
        let calls: Arc<std::sync::Mutex<Vec<Vec<u32>>>> = Arc::default();

        a.proxy.hold_replies(a.reads);
        let mgets = command_calls(&mut admin, "mget").await;
        let batch = tokio::spawn({
            let (cache, calls) = (a.cache.clone(), calls.clone());
            async move {
                let load = move |ids: Vec<u32>| {
                    let mut sorted = ids.clone();
                    sorted.sort_unstable();
                    calls.lock().unwrap().push(sorted);
                    async move {
                        Ok::<_, String>(ids.into_iter().map(|id| (id, 100 + id)).collect())
                    }
                };
                let found: Result<HashMap<u32, u32>, String> =
                    cache.fetch_many([1, 2], key_of, &policy(), load).await;
                found
            }
        });
        ran(&admin, "mget", mgets).await;
        let _: () = redis::cmd("SET")
            .arg(a.cache.redis_key(&key_of(&2)))
            .arg(b"\xff\x00garbage".as_slice())
            .query_async(&mut admin)
            .await
            .unwrap();
        a.proxy.release_replies(a.reads);
        let started = Instant::now();
        let found = batch.await.unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let expected: HashMap<u32, u32> = [(1, 101), (2, 102)].into_iter().collect();
        assert_eq!(found, expected);
        let mut seen = calls.lock().unwrap().clone();
        seen.sort();
        assert_eq!(seen, vec![vec![1], vec![2]], "each id loaded once");
        a.cache.settle().await;
        for id in [1, 2] {
            assert!(
                gone_within(&admin, &lease_of(&a.cache, &key_of(&id)), Duration::from_secs(3))
                    .await,
                "no lease left for id {id}"
            );
        }
    })
    .await
    .expect("bounded");
}

/// On a cluster (the pipeline goes to the slot's primary, both keys sharing its hash tag): a
/// list at the value key (the pipeline's `GET` answers `WRONGTYPE`, which redis-rs's cluster
/// client does not retry) is loaded once and replaced; and two processes racing a cold key,
/// the first's loader at a gate, load once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_on_a_cluster_wrong_type_and_two_processes() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let cluster = cached_redis_tests::RedisCluster::start();
    tokio::time::timeout(Duration::from_secs(60), async {
        let urls = cluster.urls();
        let build = || async {
            Cache::cluster_builder(&urls.iter().map(String::as_str).collect::<Vec<_>>())
                .namespace("adv-after-miss-cluster")
                .op_timeout(Duration::from_secs(5))
                .lock_ttl(Duration::from_secs(30))
                .build()
                .await
                .unwrap()
        };
        let (a, b) = (build().await, build().await);
        let mut admin = redis::cluster::ClusterClient::new(urls.clone())
            .unwrap()
            .get_async_connection()
            .await
            .unwrap();

        let key = Key::raw("row:list");
        let _: () = redis::cmd("LPUSH")
            .arg(a.redis_key(&key))
            .arg("x")
            .query_async(&mut admin)
            .await
            .unwrap();
        let loads = Arc::new(AtomicU32::new(0));
        let started = Instant::now();
        assert_eq!(read(&a, &key, &loads, 1).await, Ok(1));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        a.settle().await;
        assert_eq!(read(&b, &key, &loads, 2).await, Ok(1), "replaced: a hit");
        assert_eq!(loads.load(SeqCst), 1);

        let key = Key::raw("row:race");
        let gate = Gate::new();
        let first = tokio::spawn({
            let (a, key, gate, loads) = (a.clone(), key.clone(), gate.clone(), loads.clone());
            async move {
                let got: Result<u32, String> = a
                    .fetch(&key, &policy(), async move {
                        loads.fetch_add(1, SeqCst);
                        gate.passed().await;
                        Ok(10)
                    })
                    .await;
                got
            }
        });
        let lease = lease_of(&a, &key);
        assert!(
            eventually(Duration::from_secs(5), || {
                let (mut admin, lease) = (admin.clone(), lease.clone());
                async move {
                    let n: u64 = redis::cmd("EXISTS")
                        .arg(&lease)
                        .query_async(&mut admin)
                        .await
                        .unwrap();
                    n == 1
                }
            })
            .await
        );
        let second = spawn_read(&b, &key, &loads, 20);
        assert!(
            eventually(Duration::from_secs(5), || async {
                b.stats().lock_waits >= 1
            })
            .await,
            "{:?}",
            b.stats()
        );
        gate.open();
        assert_eq!(first.await.unwrap(), Ok(10));
        assert_eq!(second.await.unwrap(), Ok(10));
        assert_eq!(loads.load(SeqCst), 2, "one load per key");
    })
    .await
    .expect("bounded");
}

/// Writes paused (`CLIENT PAUSE <ms> WRITE`, as a failover does) after nothing was found: the
/// call's `GET` answers, its `SET NX` (and the whole writes connection behind it) waits out
/// the pause. The call answers with its loader's value within `op_timeout` (1 s), storing
/// nothing; when the pause ends, the `SET NX` runs and takes the lease for a caller long
/// gone, and the release sent after it on the same connection gives it back: no lease is left
/// for `lock_ttl` (30 s), and another process loads at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_writes_paused_after_the_get_leave_no_lease() {
    tokio::time::timeout(HANG, async {
        let server = RedisServer::start();
        let mut admin = server.conn().await;
        let ns = "adv-after-miss-pause";
        let cache = server
            .cache_builder(ns)
            .op_timeout(Duration::from_secs(1))
            .lock_ttl(Duration::from_secs(30))
            .breaker_threshold(100)
            .build()
            .await
            .unwrap();
        // The release script is in Redis's cache (a failed load gives its lease back).
        let failed: Result<u32, String> = cache
            .fetch(&Key::raw("warm-release"), &policy(), async {
                Err("no".to_owned())
            })
            .await;
        assert!(failed.is_err());
        cache.settle().await;
        let key = Key::raw("row:pause");
        let lease = lease_of(&cache, &key);
        let _: () = redis::cmd("CLIENT")
            .arg(&["PAUSE", "2500", "WRITE"][..])
            .query_async(&mut admin)
            .await
            .unwrap();
        let paused = Instant::now();
        let loads = AtomicU32::new(0);
        assert_eq!(read(&cache, &key, &loads, 3).await, Ok(3));
        assert!(
            paused.elapsed() < Duration::from_millis(2500),
            "answered during the pause"
        );
        assert_eq!(loads.load(SeqCst), 1);
        // The pause ends; the SET NX runs, then the release.
        assert!(
            eventually(Duration::from_secs(5), || async {
                paused.elapsed() > Duration::from_millis(2600)
            })
            .await
        );
        assert!(
            gone_within(&admin, &lease, Duration::from_secs(3)).await,
            "the lease the late SET NX took is given back"
        );
        let other = server.cache(ns).await;
        let started = Instant::now();
        let other_loads = AtomicU32::new(0);
        assert_eq!(read(&other, &key, &other_loads, 4).await, Ok(4));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    })
    .await
    .expect("bounded");
}

// Failed on f5f27de (found by the adversary, fixed since): the lease script now takes over a
// lease key no caller could have set (of another type, or without a TTL).
/// Not introduced by the pipeline: the lease script behaved the same, and the pipeline
/// hands over to it. Someone `LPUSH`es to an entry's lease key (`ns:{key}:lease`), so it is a
/// list with no TTL. A call whose `GET` finds no value sends `SET NX` and `GET`: the `SET NX`
/// finds the key and does nothing, the `GET` finds no value: "held". The lease script asked
/// next cannot `SET NX` either, reads the lease with `pcall('GET')` (a `WRONGTYPE` error table,
/// not our token) and answers "held for `PTTL`" = -1, which `acquire` clamps to 1 ms. The
/// waiter in `read/wait.rs` `lease_or_value` then loops forever: wait 2 ms, ask again, "held
/// for 1 ms", with no bound of its own (the lease never expires, no holder ever publishes).
/// The call never returns: the database is not asked, `op_timeout` never applies (each
/// request is answered at once), breaking "every call returns the loader's result within
/// `op_timeout`" whatever Redis holds. A string lease with no TTL (`SET ns:{key}:lease x`)
/// hangs the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_list_at_the_lease_key_hangs_the_call_forever() {
    let server = RedisServer::start();
    let lease_list = |lease: String| {
        let mut cmd = redis::cmd("LPUSH");
        cmd.arg(lease).arg("x");
        cmd
    };
    a_lease_no_caller_set_is_taken_over(&server, "adv-after-miss-lease-list", lease_list).await;
}

/// A lease key without a TTL (`SET ns:{key}:lease x`, or a `PERSIST`): no caller set it, it
/// would never expire, and nobody would ever give it back. The call takes it over and loads.
// Failed on f5f27de (found by the adversary, fixed since): the call waited "1 ms" for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_lease_without_a_ttl_hangs_the_call_forever() {
    let server = RedisServer::start();
    let lease_without_ttl = |lease: String| {
        let mut cmd = redis::cmd("SET");
        cmd.arg(lease).arg("someone");
        cmd
    };
    let ns = "adv-after-miss-lease-persist";
    a_lease_no_caller_set_is_taken_over(&server, ns, lease_without_ttl).await;
}

/// Writes `ns`'s lease key of a fresh key with `make` (a list, or a string without a TTL),
/// then reads the key: the call answers its loader's value within 5 s (`op_timeout` and
/// `lock_ttl` 1 s), stores it, and leaves no lease.
async fn a_lease_no_caller_set_is_taken_over(
    server: &RedisServer,
    ns: &str,
    make: impl FnOnce(String) -> redis::Cmd,
) {
    let mut admin = server.conn().await;
    let cache = server
        .cache_builder(ns)
        .op_timeout(Duration::from_secs(1))
        .lock_ttl(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let key = Key::raw("row:lease");
    let _: () = make(lease_of(&cache, &key))
        .query_async(&mut admin)
        .await
        .unwrap();
    let loads = AtomicU32::new(0);
    let answered =
        tokio::time::timeout(Duration::from_secs(5), read(&cache, &key, &loads, 11)).await;
    assert_eq!(
        answered,
        Ok(Ok(11)),
        "the call must answer with its loader's value (op_timeout 1 s, lock_ttl 1 s); \
         stats: {:?}",
        cache.stats()
    );
    cache.settle().await;
    assert_eq!(read(&cache, &key, &loads, 12).await, Ok(11), "stored");
    assert!(get_raw(&mut admin, &lease_of(&cache, &key)).await.is_none());
}
