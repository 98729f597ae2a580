//! Adversarial tests of the lease scripts' own `EVALSHA` (`lease/call.rs`), the commands built
//! by `conn/command.rs` and the background write-back under the borrowed lease guard
//! (`read/lead.rs`, `read/lease_guard.rs`), against real redis-server processes. Scripts are
//! lost with `SCRIPT FLUSH` (what a restart or a promoted replica does to them) at the step
//! under test; loaders carry hooks, replies are held at a proxy, and nothing waits on a sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cached_redis::{Cache, Codec, Key, Policy};
use cached_redis_tests::{
    Gate, RedisCluster, RedisServer, SlotMove, assert_no_state_left, command_calls, config_set,
    eventually, exists, flush_scripts, get_raw, gone,
};
use tokio::sync::Notify;

fn policy() -> Policy {
    Policy::new("adv-calls", Duration::from_secs(60)).unwrap()
}

/// A guard against hangs only: every wait in these tests ends on an event.
const HANG: Duration = Duration::from_secs(30);

/// A call's hooks: its loads counted, its start told, its gate to wait at.
fn hooks() -> (Arc<AtomicU32>, Arc<Notify>, Arc<Gate>) {
    (
        Arc::default(),
        Arc::new(Notify::new()),
        Arc::new(Gate::new()),
    )
}

/// A cache whose leases outlive the test: only a release lets one go.
async fn long_lease(server: &RedisServer, namespace: &str) -> Cache {
    let builder = server.cache_builder(namespace);
    builder
        .lock_ttl(Duration::from_secs(60))
        .build()
        .await
        .unwrap()
}

fn lease_key(cache: &Cache, key: &Key) -> String {
    format!("{}:lease", cache.redis_key(key))
}

/// A call of `key` whose loader counts itself in `loads`, says it started on `started`, waits
/// for `gate`, runs `during` and answers `value`.
fn held_call<F, Fut>(
    cache: &Cache,
    key: &Key,
    loads: &Arc<AtomicU32>,
    (started, gate): (&Arc<Notify>, &Arc<Gate>),
    during: F,
    value: Result<u64, String>,
) -> tokio::task::JoinHandle<Result<u64, String>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (cache, key, loads) = (cache.clone(), key.clone(), loads.clone());
    let (started, gate) = (started.clone(), gate.clone());
    tokio::spawn(async move {
        let load = async move {
            loads.fetch_add(1, SeqCst);
            started.notify_one();
            gate.passed().await;
            during().await;
            value
        };
        cache.fetch(&key, &policy(), load).await
    })
}

/// A call of `key` whose loader counts itself and answers `value` at once.
fn quick_call(
    cache: &Cache,
    key: &Key,
    loads: &Arc<AtomicU32>,
    value: u64,
) -> tokio::task::JoinHandle<Result<u64, String>> {
    let (cache, key, loads) = (cache.clone(), key.clone(), loads.clone());
    tokio::spawn(async move {
        let load = async move {
            loads.fetch_add(1, SeqCst);
            Ok(value)
        };
        cache.fetch(&key, &policy(), load).await
    })
}

/// Waits until `n` callers have joined a load of `cache` (its `coalesced` count).
async fn until_joined(cache: &Cache, n: u64) {
    let joined = eventually(HANG, || async { cache.stats().coalesced >= n }).await;
    assert!(joined, "{n} callers joined: {:?}", cache.stats());
}

// ---------------------------------------------------------------------------------------------
// Scripts Redis lost, at each step of a miss.
// ---------------------------------------------------------------------------------------------

/// Redis loses its scripts while a miss loads (two callers of the same key joined it): the
/// write-back meets `NOSCRIPT`, loads the script and runs. Every caller gets the loader's
/// value, one load, the value is stored, no lease is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_scripts_flushed_during_the_load_are_loaded_for_the_write_back() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let cache = server.cache("adv-calls-wb").await;
    let key = Key::raw("row:wb");
    let (loads, started, gate) = hooks();
    let flushed = {
        let admin = admin.clone();
        move || async move { flush_scripts(&mut admin.clone()).await }
    };
    let leader = held_call(&cache, &key, &loads, (&started, &gate), flushed, Ok(7));
    started.notified().await;
    let joiners = [
        quick_call(&cache, &key, &loads, 99),
        quick_call(&cache, &key, &loads, 99),
    ];
    until_joined(&cache, 2).await;
    let script_loads = command_calls(&mut admin, "script|load").await;
    gate.open();
    assert_eq!(leader.await.unwrap(), Ok(7));
    for joiner in joiners {
        assert_eq!(
            joiner.await.unwrap(),
            Ok(7),
            "a joiner gets the leader's value"
        );
    }
    tokio::time::timeout(HANG, cache.settle()).await.unwrap();
    assert_eq!(loads.load(SeqCst), 1, "one load");
    assert!(command_calls(&mut admin, "script|load").await > script_loads);
    assert!(
        get_raw(&mut admin, &cache.redis_key(&key)).await.is_some(),
        "stored"
    );
    assert!(
        !exists(&mut admin, &lease_key(&cache, &key)).await,
        "no lease left"
    );
    let stats = cache.stats();
    assert_eq!(
        (stats.stale_refused, stats.redis_errors),
        (0, 0),
        "{stats:?}"
    );
    // And a later call reads it.
    assert_eq!(quick_call(&cache, &key, &loads, 99).await.unwrap(), Ok(7));
    assert_eq!(loads.load(SeqCst), 1);
    assert_no_state_left(&cache).await;
}

/// A load that fails releases its lease before its caller returns (`give_up`): Redis lost the
/// release script during the load; the release loads it and the lease is gone when the call
/// returns, not `lock_ttl` later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_release_after_a_failed_load_loads_the_lost_script() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let cache = long_lease(&server, "adv-calls-rel").await;
    let key = Key::raw("row:rel");
    let (loads, started, gate) = hooks();
    let flushed = {
        let admin = admin.clone();
        move || async move { flush_scripts(&mut admin.clone()).await }
    };
    let failing = Err("the database is down".to_owned());
    let leader = held_call(&cache, &key, &loads, (&started, &gate), flushed, failing);
    started.notified().await;
    assert!(
        exists(&mut admin, &lease_key(&cache, &key)).await,
        "the lease is held"
    );
    gate.open();
    assert!(leader.await.unwrap().is_err());
    assert!(
        !exists(&mut admin, &lease_key(&cache, &key)).await,
        "the lease was released before the failed call returned"
    );
    assert_eq!(quick_call(&cache, &key, &loads, 3).await.unwrap(), Ok(3));
    tokio::time::timeout(HANG, cache.settle()).await.unwrap();
    assert_eq!(loads.load(SeqCst), 2);
    assert_no_state_left(&cache).await;
}

/// A load slower than `lock_ttl`: Redis loses the scripts while it runs, so the first renewal
/// after that meets `NOSCRIPT`. It loads the script and keeps the lease: the write-back is not
/// refused and the value is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_renewal_loads_the_lost_script_and_keeps_the_lease() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let cache = server
        .cache_builder("adv-calls-renew")
        .lock_ttl(Duration::from_secs(1))
        .max_load(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let key = Key::raw("row:renew");
    let loads = Arc::new(AtomicU32::new(0));
    let lease = lease_key(&cache, &key);
    let call = {
        let (cache, key, loads, mut admin) =
            (cache.clone(), key.clone(), loads.clone(), admin.clone());
        tokio::spawn(async move {
            let load = async move {
                loads.fetch_add(1, SeqCst);
                let before = command_calls(&mut admin, "script|load").await;
                flush_scripts(&mut admin).await;
                // Renewals every third of a second: wait until one has loaded the script, then
                // until the lease has been renewed for longer than its TTL since the flush.
                let evalsha = command_calls(&mut admin, "evalsha").await;
                let renewed = eventually(HANG, || {
                    let mut admin = admin.clone();
                    async move {
                        command_calls(&mut admin, "script|load").await > before
                            && command_calls(&mut admin, "evalsha").await >= evalsha + 5
                    }
                })
                .await;
                assert!(renewed, "renewals ran after the flush");
                Ok::<u64, String>(5)
            };
            cache.fetch(&key, &policy(), load).await
        })
    };
    assert_eq!(
        tokio::time::timeout(HANG, call).await.unwrap().unwrap(),
        Ok(5)
    );
    tokio::time::timeout(HANG, cache.settle()).await.unwrap();
    let stats = cache.stats();
    assert_eq!(stats.stale_refused, 0, "the lease was kept: {stats:?}");
    assert!(
        get_raw(&mut admin, &cache.redis_key(&key)).await.is_some(),
        "stored"
    );
    assert!(!exists(&mut admin, &lease).await);
}

/// An invalidation during the load revokes the lease, then Redis loses the scripts: the
/// write-back meets `NOSCRIPT`, loads the script, and is refused (`stale_refused` counted
/// once); the joiner reads again and gets the new row; nothing of the old row is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_an_invalidation_then_lost_scripts_still_refuse_the_write_back() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let cache = server.cache("adv-calls-inv").await;
    let other = server.cache("adv-calls-inv").await;
    let key = Key::raw("row:inv");
    let db = Arc::new(AtomicU64::new(1));
    let (loads, started, gate) = hooks();
    let leader = {
        let (cache, key, loads, db) = (cache.clone(), key.clone(), loads.clone(), db.clone());
        let (started, gate) = (started.clone(), gate.clone());
        tokio::spawn(async move {
            let load = async move {
                loads.fetch_add(1, SeqCst);
                let read = db.load(SeqCst);
                started.notify_one();
                gate.passed().await;
                Ok::<u64, String>(read)
            };
            cache.fetch(&key, &policy(), load).await
        })
    };
    started.notified().await;
    let joiner = {
        let (cache, key, loads, db) = (cache.clone(), key.clone(), loads.clone(), db.clone());
        tokio::spawn(async move {
            let load = async move {
                loads.fetch_add(1, SeqCst);
                Ok::<u64, String>(db.load(SeqCst))
            };
            cache.fetch(&key, &policy(), load).await
        })
    };
    until_joined(&cache, 1).await;
    db.store(2, SeqCst);
    other.invalidate(&key).await.unwrap();
    flush_scripts(&mut admin).await;
    gate.open();
    assert_eq!(leader.await.unwrap(), Ok(1), "its own load");
    assert_eq!(joiner.await.unwrap(), Ok(2), "the joiner reads again");
    tokio::time::timeout(HANG, cache.settle()).await.unwrap();
    assert_eq!(cache.stats().stale_refused, 1, "{:?}", cache.stats());
    let fresh = Arc::new(AtomicU32::new(0));
    assert_eq!(quick_call(&other, &key, &fresh, 9).await.unwrap(), Ok(2));
    assert_eq!(fresh.load(SeqCst), 0, "the joiner's value was stored");
    assert!(!exists(&mut admin, &lease_key(&cache, &key)).await);
    assert_no_state_left(&cache).await;
}

/// Redis lost its scripts before a miss (its lease script meets `NOSCRIPT`) and again before
/// an invalidation and a compare-and-set (`update`): each loads its script and runs; one load,
/// the value stored, removed, updated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_lease_invalidate_and_update_scripts_are_loaded_again() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let cache = server.cache("adv-calls-lost").await;
    let key = Key::raw("row:lost");
    let loads = Arc::new(AtomicU32::new(0));
    flush_scripts(&mut admin).await;
    assert_eq!(quick_call(&cache, &key, &loads, 1).await.unwrap(), Ok(1));
    tokio::time::timeout(HANG, cache.settle()).await.unwrap();
    assert!(
        get_raw(&mut admin, &cache.redis_key(&key)).await.is_some(),
        "stored"
    );
    flush_scripts(&mut admin).await;
    assert!(
        cache.update(&key, |v: &mut u64| *v = 11).await.unwrap(),
        "updated"
    );
    assert_eq!(quick_call(&cache, &key, &loads, 0).await.unwrap(), Ok(11));
    flush_scripts(&mut admin).await;
    assert!(cache.invalidate(&key).await.unwrap(), "removed");
    assert!(get_raw(&mut admin, &cache.redis_key(&key)).await.is_none());
    assert_eq!(quick_call(&cache, &key, &loads, 3).await.unwrap(), Ok(3));
    tokio::time::timeout(HANG, cache.settle()).await.unwrap();
    assert_eq!(loads.load(SeqCst), 2);
    let stats = cache.stats();
    assert_eq!((stats.redis_errors, stats.fallbacks), (0, 0), "{stats:?}");
    assert!(!exists(&mut admin, &lease_key(&cache, &key)).await);
}

// ---------------------------------------------------------------------------------------------
// The write-back under the borrowed guard.
// ---------------------------------------------------------------------------------------------

/// Callers that joined a load are handed its value when it was written back (the flight was
/// closed before the task spawned: `store_and_share` shares only if someone joined), without
/// reading Redis again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_joiners_of_a_closed_flight_get_the_value() {
    let server = RedisServer::start();
    let cache = server.cache("adv-calls-join").await;
    for round in 0..5u64 {
        let key = Key::raw(format!("row:join:{round}"));
        let (loads, started, gate) = hooks();
        let nothing = || async {};
        let leader = held_call(&cache, &key, &loads, (&started, &gate), nothing, Ok(round));
        started.notified().await;
        let joiner = quick_call(&cache, &key, &loads, 1000);
        until_joined(&cache, round + 1).await;
        gate.open();
        assert_eq!(leader.await.unwrap(), Ok(round));
        assert_eq!(
            joiner.await.unwrap(),
            Ok(round),
            "the joiner took the value"
        );
        assert_eq!(loads.load(SeqCst), 1, "round {round}: one load");
        // The joiner was handed the value: it did not read it from Redis.
        assert_eq!(cache.stats().hits, 0, "round {round}: {:?}", cache.stats());
    }
    tokio::time::timeout(HANG, cache.settle()).await.unwrap();
    assert_no_state_left(&cache).await;
}

/// Redis refuses the write-back (OOM under `noeviction`, reached during the load): the
/// write-back errs, the guard stays armed and releases the lease when the task drops it;
/// every caller (the leader's, and one that joined) gets the loader's value, nothing is
/// stored and no lease is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_write_back_refused_for_memory_releases_the_lease() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let cache = long_lease(&server, "adv-calls-oom").await;
    let key = Key::raw("row:oom");
    let (loads, started, gate) = hooks();
    let refuse = {
        let admin = admin.clone();
        move || async move {
            let mut admin = admin.clone();
            config_set(&mut admin, "maxmemory-policy", "noeviction").await;
            config_set(&mut admin, "maxmemory", "1").await;
        }
    };
    let leader = held_call(&cache, &key, &loads, (&started, &gate), refuse, Ok(4));
    started.notified().await;
    let joiner = quick_call(&cache, &key, &loads, 4);
    until_joined(&cache, 1).await;
    gate.open();
    assert_eq!(leader.await.unwrap(), Ok(4));
    assert_eq!(joiner.await.unwrap(), Ok(4));
    tokio::time::timeout(HANG, cache.settle()).await.unwrap();
    assert!(
        gone(&admin, &lease_key(&cache, &key), HANG).await,
        "the lease was released after the refused write-back"
    );
    assert!(get_raw(&mut admin, &cache.redis_key(&key)).await.is_none());
    config_set(&mut admin, "maxmemory", "0").await;
    assert_no_state_left(&cache).await;
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster.
// ---------------------------------------------------------------------------------------------

fn cluster_cache(cluster: &RedisCluster, namespace: &str) -> cached_redis::CacheBuilder {
    let urls = cluster.urls();
    Cache::cluster_builder(&urls.iter().map(String::as_str).collect::<Vec<_>>())
        .namespace(namespace)
        .op_timeout(Duration::from_secs(20))
}

/// The lease script a call starts with (its function's calls keep missing) meets `NOSCRIPT`
/// (its primary lost the scripts), and while the script
/// is being loaded (`SCRIPT LOAD` goes to every node; another primary, stopped, holds the reply)
/// the key's slot starts moving: the call sent again after the load is answered `TRYAGAIN`.
/// It is retried until the move ends, as any other `TRYAGAIN` is, and the call finds the value.
// Failed on a79c439 (found by the adversary, fixed since): the call sent after the load was
// sent once and its `TRYAGAIN` returned, so the caller fell back to its own load while the
// value sat in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_lease_script_loaded_again_during_a_slot_move_is_retried() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let cluster = RedisCluster::start();
    let cache = cluster_cache(&cluster, "adv-calls-move")
        .build()
        .await
        .unwrap();
    let key = Key::raw("row:move");
    let loads = Arc::new(AtomicU32::new(0));
    assert_eq!(quick_call(&cache, &key, &loads, 1).await.unwrap(), Ok(1));
    // Calls that keep missing: the next one starts with the lease script (a call whose GET
    // found no value takes the lease with `SET NX` and runs no script).
    let others = Arc::new(AtomicU32::new(0));
    for id in 0..40 {
        let other = Key::builder().text("row:other:").part(&id).build();
        let missed = quick_call(&cache, &other, &others, id).await.unwrap();
        assert_eq!(missed, Ok(id));
    }
    tokio::time::timeout(HANG, cache.settle()).await.unwrap();
    let entry = cache.redis_key(&key);
    let from = cluster.primary_holding(&entry).expect("stored");
    let to = cluster
        .primaries()
        .into_iter()
        .find(|p| *p != from)
        .unwrap();
    // The third primary holds the SCRIPT LOAD's reply (stopped, briefly: well within the
    // cluster's node timeout); the cache's cluster connections reach only primaries.
    let third = cluster
        .primaries()
        .into_iter()
        .find(|p| *p != from && *p != to)
        .unwrap();
    let mut node = cluster.node(from).conn().await;
    let stored = get_raw(&mut node, &entry).await.expect("the stored value");
    let _: () = redis::cmd("DEL")
        .arg(&entry)
        .query_async(&mut node)
        .await
        .unwrap();
    flush_scripts(&mut node).await;
    let loaded_before = command_calls(&mut node, "script|load").await;
    cluster.node(third).pause();
    let call = quick_call(&cache, &key, &loads, 2);
    // The lease script met NOSCRIPT, and the key's primary has loaded it again; the stopped
    // primary has not answered its SCRIPT LOAD.
    let loading = eventually(HANG, || {
        let mut node = node.clone();
        async move { command_calls(&mut node, "script|load").await > loaded_before }
    })
    .await;
    assert!(loading, "the lease script was loaded again");
    // Another process stores the value meanwhile, and the slot starts moving: a script over
    // the value (present) and the lease (absent) is answered TRYAGAIN until the move ends.
    let _: () = redis::cmd("SET")
        .arg(&entry)
        .arg(&stored)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut node)
        .await
        .unwrap();
    let moving = SlotMove::of(&cluster, &entry, from, to);
    moving.begin();
    let refused_before = moving.refusals();
    cluster.node(third).resume();
    // More refusals than redis-rs's own two tries, or the call gave up.
    let refused = eventually(HANG, || {
        std::future::ready(call.is_finished() || moving.refusals() >= refused_before + 3)
    })
    .await;
    assert!(refused);
    let refusals = moving.refusals() - refused_before;
    moving.move_keys();
    moving.finish();
    let answered = tokio::time::timeout(HANG, call).await.unwrap().unwrap();
    let stats = cache.stats();
    assert_eq!(
        (answered, loads.load(SeqCst)),
        (Ok(1), 1),
        "the stored value, no second load (TRYAGAIN answered {refusals} times; {stats:?})"
    );
}

/// Batches (`MGET` built by `conn::command::keyed`, across every primary) and single misses
/// after every node lost its scripts, with keys of odd bytes: the stored ids are read, the rest
/// loaded once and stored, each under its own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_cluster_batches_and_lost_scripts() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let cluster = RedisCluster::start();
    let cache = cluster_cache(&cluster, "adv-calls-batch")
        .codec(Codec::MessagePack)
        .build()
        .await
        .unwrap();
    let names: Vec<String> = (0..24u32)
        .map(|i| format!("id:{i}:{{}}}}{{ \r\n\u{0}\u{7f}é\\"))
        .collect();
    let key_of = |name: &String| Key::raw(name.as_str());
    let loaded: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let batch = |ids: Vec<String>| {
        let loaded = loaded.clone();
        async move {
            loaded.lock().unwrap().extend(ids.iter().cloned());
            let values = ids.into_iter().map(|id| (id.clone(), id.into_bytes()));
            Ok::<std::collections::HashMap<String, Vec<u8>>, String>(values.collect())
        }
    };
    let first: std::collections::HashMap<String, Vec<u8>> = cache
        .fetch_many(names[..12].to_vec(), key_of, &policy(), batch)
        .await
        .unwrap();
    assert_eq!(first.len(), 12);
    tokio::time::timeout(HANG, cache.settle()).await.unwrap();
    for port in cluster.primaries() {
        flush_scripts(&mut cluster.node(port).conn().await).await;
    }
    assert!(cache.invalidate(&key_of(&names[0])).await.unwrap());
    loaded.lock().unwrap().clear();
    let all: std::collections::HashMap<String, Vec<u8>> = cache
        .fetch_many(names.clone(), key_of, &policy(), batch)
        .await
        .unwrap();
    tokio::time::timeout(HANG, cache.settle()).await.unwrap();
    assert_eq!(all.len(), names.len());
    for (name, value) in &all {
        assert_eq!(value, name.as_bytes());
    }
    let mut again = loaded.lock().unwrap().clone();
    again.sort();
    let mut expected: Vec<String> = names[12..].to_vec();
    expected.push(names[0].clone());
    expected.sort();
    assert_eq!(again, expected, "only the missing ids were loaded");
    loaded.lock().unwrap().clear();
    let hits: std::collections::HashMap<String, Vec<u8>> = cache
        .fetch_many(names.clone(), key_of, &policy(), batch)
        .await
        .unwrap();
    assert_eq!(hits, all);
    assert!(
        loaded.lock().unwrap().is_empty(),
        "every id read from Redis"
    );
    let stats = cache.stats();
    assert_eq!((stats.redis_errors, stats.fallbacks), (0, 0), "{stats:?}");
}

/// The function of [`held_large_binary_values_through_every_script`] (one name, one address:
/// a function's score is kept by where its name lives).
const LARGE: &str = "adv-calls-large";

/// A value of 1.5 MB that is not UTF-8 (MessagePack, arbitrary bytes) through every script
/// with a value in it, each after Redis lost the scripts: the write-back, the lease script
/// that finds it (a function whose calls start with the lease script: its value is taken
/// from the reply), and an update's compare-and-set. Each answer is the whole value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_large_binary_values_through_every_script() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let build = || {
        server
            .cache_builder("adv-calls-large")
            .codec(Codec::MessagePack)
            .op_timeout(Duration::from_secs(20))
            .build()
    };
    let (writer, reader) = (build().await.unwrap(), build().await.unwrap());
    // The reader's calls of this function start with the lease script.
    cached_redis_tests::rows::lease_first(&reader, LARGE, 1_000).await;
    let mut rng = cached_redis_tests::Rng::seeded(7);
    let big: Vec<u8> = (0..1_500_000).map(|_| rng.below(256) as u8).collect();
    let key = Key::raw("row:large:\u{ff}\r\n{x}");
    let fetch = |cache: &Cache, value: Vec<u8>, loads: Arc<AtomicU32>| {
        let (cache, key) = (cache.clone(), key.clone());
        async move {
            let load = async move {
                loads.fetch_add(1, SeqCst);
                Ok::<Vec<u8>, String>(value)
            };
            cache
                .fetch(&key, &cached_redis_tests::rows::policy(LARGE), load)
                .await
        }
    };
    let loads = Arc::new(AtomicU32::new(0));
    flush_scripts(&mut admin).await;
    assert_eq!(
        fetch(&writer, big.clone(), loads.clone()).await.unwrap(),
        big
    );
    tokio::time::timeout(HANG, writer.settle()).await.unwrap();
    let raw = get_raw(&mut admin, &writer.redis_key(&key))
        .await
        .expect("stored");
    assert!(raw.len() > 1_500_000 && std::str::from_utf8(&raw).is_err());
    flush_scripts(&mut admin).await;
    let read = fetch(&reader, Vec::new(), loads.clone()).await.unwrap();
    assert!(
        read == big,
        "the lease script's value is whole ({} bytes)",
        read.len()
    );
    assert_eq!(loads.load(SeqCst), 1, "read, not loaded");
    flush_scripts(&mut admin).await;
    let updated = writer
        .update(&key, |v: &mut Vec<u8>| v.reverse())
        .await
        .unwrap();
    assert!(updated);
    let mut reversed = big.clone();
    reversed.reverse();
    let read = fetch(&reader, Vec::new(), loads.clone()).await.unwrap();
    assert!(
        read == reversed,
        "the update's value is whole ({} bytes)",
        read.len()
    );
    assert_eq!(loads.load(SeqCst), 1);
    assert!(!exists(&mut admin, &lease_key(&writer, &key)).await);
    let stats = (writer.stats(), reader.stats());
    assert_eq!(
        (stats.0.redis_errors, stats.1.redis_errors),
        (0, 0),
        "{stats:?}"
    );
}
