//! Batch reads (`batch` on the attribute, `Cache::fetch_many`): one `MGET` for every id, the
//! loader called once with exactly the missing ids, each id's entry the one a single-id
//! function with the same key reads and writes, errors never cached, leases kept.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cached_redis::{Cache, Key, Policy, redis_cached};
use cached_redis_tests::{
    HeldDb, Proxy, RedisServer, RefusingPort, assert_no_state_left, command_calls, eventually,
    get_raw, near_cache, near_cache_timed,
};
use tokio::sync::Notify;

/// The loader's calls, each with the ids it was given (sorted).
#[derive(Default)]
struct Calls(Mutex<Vec<Vec<u64>>>);

impl Calls {
    fn note(&self, ids: impl IntoIterator<Item = u64>) {
        let mut ids: Vec<u64> = ids.into_iter().collect();
        ids.sort_unstable();
        self.0.lock().unwrap().push(ids);
    }

    fn take(&self) -> Vec<Vec<u64>> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn product(id: u64) -> String {
    format!("product {id}")
}

#[redis_cached(key = "product:<id>:v1", ttl = "60s", cache = cache, batch)]
async fn products(
    cache: &Cache,
    calls: &Calls,
    ids: &[u64],
) -> Result<HashMap<u64, String>, String> {
    calls.note(ids.iter().copied());
    // Odd ids above 1000 do not exist.
    let found = ids.iter().filter(|id| **id < 1000 || id.is_multiple_of(2));
    Ok(found.map(|&id| (id, product(id))).collect())
}

#[redis_cached(key = "product:<id>:v1", ttl = "60s", cache = cache)]
async fn one_product(cache: &Cache, calls: &Calls, id: u64) -> Result<String, String> {
    calls.note([id]);
    Ok(product(id))
}

#[redis_cached(key = "product:<id>:v1", ttl = "60s", cache = cache, batch)]
async fn products_vec(cache: &Cache, calls: &Calls, ids: Vec<u64>) -> HashMap<u64, String> {
    calls.note(ids.clone());
    ids.into_iter().map(|id| (id, product(id))).collect()
}

#[redis_cached(key = "product:<id>:v1", ttl = "60s", cache = cache, batch)]
async fn products_set(
    cache: &Cache,
    calls: &Calls,
    ids: HashSet<u64>,
) -> Result<HashMap<u64, String>, String> {
    calls.note(ids.iter().copied());
    Ok(ids.into_iter().map(|id| (id, product(id))).collect())
}

#[redis_cached(key = "product:<id>:v1", ttl = "60s", cache = cache, batch)]
async fn products_btree(
    cache: &Cache,
    calls: &Calls,
    ids: &BTreeSet<u64>,
) -> Result<HashMap<u64, String>, String> {
    calls.note(ids.iter().copied());
    Ok(ids.iter().map(|&id| (id, product(id))).collect())
}

#[redis_cached(key = "product:<id>:v1", ttl = "60s", cache = cache, batch)]
async fn products_iter(
    cache: &Cache,
    calls: &Calls,
    ids: impl IntoIterator<Item = u64>,
) -> Result<HashMap<u64, String>, String> {
    let ids: Vec<u64> = ids.into_iter().collect();
    calls.note(ids.iter().copied());
    Ok(ids.into_iter().map(|id| (id, product(id))).collect())
}

#[redis_cached(key = "product:<id>:v1", ttl = "60s", cache = cache, batch)]
async fn failing(
    cache: &Cache,
    calls: &Calls,
    ids: &[u64],
) -> Result<HashMap<u64, String>, String> {
    calls.note(ids.iter().copied());
    Err(format!("the database is down ({} ids)", ids.len()))
}

#[redis_cached(key = "product:<id>:v1", ttl = "60s", none_ttl = "60s", cache = cache, batch)]
async fn products_remembering_absent(
    cache: &Cache,
    calls: &Calls,
    ids: &[u64],
) -> Result<HashMap<u64, String>, String> {
    calls.note(ids.iter().copied());
    Ok(ids
        .iter()
        .filter(|id| id.is_multiple_of(2))
        .map(|&id| (id, product(id)))
        .collect())
}

#[redis_cached(key = "tenant:<tenant>:product:<id>", ttl = "60s", cache = cache, batch)]
async fn tenant_products(
    cache: &Cache,
    calls: &Calls,
    tenant: &str,
    ids: &[u64],
) -> Result<HashMap<u64, String>, String> {
    calls.note(ids.iter().copied());
    Ok(ids
        .iter()
        .map(|&id| (id, format!("{tenant} {id}")))
        .collect())
}

fn sorted(map: &HashMap<u64, String>) -> Vec<(u64, String)> {
    let mut pairs: Vec<_> = map.iter().map(|(k, v)| (*k, v.clone())).collect();
    pairs.sort();
    pairs
}

fn expected(ids: impl IntoIterator<Item = u64>) -> Vec<(u64, String)> {
    let mut pairs: Vec<_> = ids.into_iter().map(|id| (id, product(id))).collect();
    pairs.sort();
    pairs
}

#[tokio::test]
async fn a_hundred_ids_with_ninety_cached_take_one_mget_and_one_load_of_the_ten_missing() {
    let server = RedisServer::start();
    let cache = server.cache("batch-hundred").await;
    let mut admin = server.conn().await;
    let calls = Calls::default();
    let cached: Vec<u64> = (0..100).filter(|id| id % 10 != 3).collect();
    assert_eq!(cached.len(), 90);
    products(&cache, &calls, &cached).await.unwrap();
    cache.settle().await;
    calls.take();

    let (mgets, scripts) = (
        command_calls(&mut admin, "mget").await,
        command_calls(&mut admin, "evalsha").await,
    );
    let all: Vec<u64> = (0..100).collect();
    let found = products(&cache, &calls, &all).await.unwrap();
    assert_eq!(sorted(&found), expected(0..100));
    assert_eq!(
        calls.take(),
        vec![(0..100).filter(|id| id % 10 == 3).collect::<Vec<_>>()],
        "one load, of exactly the ten missing ids"
    );
    assert_eq!(
        command_calls(&mut admin, "mget").await - mgets,
        1,
        "one MGET"
    );
    cache.settle().await;
    assert_eq!(
        command_calls(&mut admin, "evalsha").await - scripts,
        10,
        "a write-back for each missing id (its lease taken by SET NX), none for the others"
    );

    // All cached now: one MGET, no load, no script.
    let scripts = command_calls(&mut admin, "evalsha").await;
    let found = products(&cache, &calls, &all).await.unwrap();
    assert_eq!(found.len(), 100);
    assert!(calls.take().is_empty(), "every id was a hit");
    assert_eq!(command_calls(&mut admin, "mget").await - mgets, 2);
    assert_eq!(
        command_calls(&mut admin, "evalsha").await,
        scripts,
        "a hit runs no script"
    );
    assert_no_state_left(&cache).await;
}

#[tokio::test]
async fn a_batch_and_a_single_id_function_with_the_same_key_share_their_entries() {
    let server = RedisServer::start();
    let cache = server.cache("batch-shared").await;
    let calls = Calls::default();

    // Stored by the single-id function, read by the batch.
    assert_eq!(one_product(&cache, &calls, 7).await.unwrap(), product(7));
    cache.settle().await;
    calls.take();
    let found = products(&cache, &calls, &[7, 8]).await.unwrap();
    assert_eq!(sorted(&found), expected([7, 8]));
    assert_eq!(
        calls.take(),
        vec![vec![8]],
        "7 was the single function's entry"
    );
    cache.settle().await;

    // Stored by the batch, read by the single-id function.
    assert_eq!(one_product(&cache, &calls, 8).await.unwrap(), product(8));
    assert!(calls.take().is_empty(), "8 was the batch's entry");

    // Either function's invalidation removes the shared entry.
    invalidate_one_product(&cache, 7).await.unwrap();
    assert_eq!(
        invalidate_products(&cache, &[8, 9]).await.unwrap(),
        1,
        "8 was there, 9 was not"
    );
    let found = products(&cache, &calls, &[7, 8]).await.unwrap();
    assert_eq!(sorted(&found), expected([7, 8]));
    assert_eq!(calls.take(), vec![vec![7, 8]]);
    assert_no_state_left(&cache).await;
}

#[tokio::test]
async fn every_collection_shape_reads_the_same_entries() {
    let server = RedisServer::start();
    let cache = server.cache("batch-shapes").await;
    let calls = Calls::default();
    let found = products_vec(&cache, &calls, vec![1, 2]).await;
    assert_eq!(sorted(&found), expected([1, 2]));
    cache.settle().await;
    let set: HashSet<u64> = [2, 3].into_iter().collect();
    let found = products_set(&cache, &calls, set).await.unwrap();
    assert_eq!(sorted(&found), expected([2, 3]));
    cache.settle().await;
    let tree: BTreeSet<u64> = [3, 4].into_iter().collect();
    let found = products_btree(&cache, &calls, &tree).await.unwrap();
    assert_eq!(sorted(&found), expected([3, 4]));
    cache.settle().await;
    let found = products_iter(&cache, &calls, [4, 5]).await.unwrap();
    assert_eq!(sorted(&found), expected([4, 5]));
    assert_eq!(calls.take(), vec![vec![1, 2], vec![3], vec![4], vec![5]]);
}

#[tokio::test]
async fn duplicates_are_read_once_and_no_ids_ask_nothing() {
    let server = RedisServer::start();
    let cache = server.cache("batch-dups").await;
    let mut admin = server.conn().await;
    let calls = Calls::default();
    let found = products(&cache, &calls, &[5, 5, 6, 5, 6]).await.unwrap();
    assert_eq!(sorted(&found), expected([5, 6]));
    assert_eq!(calls.take(), vec![vec![5, 6]], "each id loaded once");
    cache.settle().await;

    let mgets = command_calls(&mut admin, "mget").await;
    let found = products(&cache, &calls, &[]).await.unwrap();
    assert!(found.is_empty());
    assert!(calls.take().is_empty(), "no load for no ids");
    assert_eq!(
        command_calls(&mut admin, "mget").await,
        mgets,
        "no Redis call"
    );
}

#[tokio::test]
async fn a_failed_load_is_the_answer_caches_nothing_and_lets_every_lease_go() {
    let server = RedisServer::start();
    let cache = server.cache("batch-errors").await;
    let mut admin = server.conn().await;
    let calls = Calls::default();
    products(&cache, &calls, &[1]).await.unwrap();
    cache.settle().await;
    calls.take();

    let error = failing(&cache, &calls, &[1, 2, 3]).await.unwrap_err();
    assert_eq!(error, "the database is down (2 ids)");
    assert_eq!(
        calls.take(),
        vec![vec![2, 3]],
        "the one cached id was not loaded"
    );
    cache.settle().await;
    for id in [2, 3] {
        let key = cache.redis_key(&one_product_key(id));
        assert_eq!(
            get_raw(&mut admin, &key).await,
            None,
            "nothing stored for {id}"
        );
        let lease = format!("{key}:lease");
        assert_eq!(
            get_raw(&mut admin, &lease).await,
            None,
            "the lease of {id} was let go"
        );
    }
    let found = products(&cache, &calls, &[1, 2, 3]).await.unwrap();
    assert_eq!(sorted(&found), expected([1, 2, 3]));
    assert_eq!(
        calls.take(),
        vec![vec![2, 3]],
        "loaded again, not from the failure"
    );
    assert_no_state_left(&cache).await;
}

#[tokio::test]
async fn an_id_the_loader_leaves_out_is_not_found_and_stored_as_absent_only_with_none_ttl() {
    let server = RedisServer::start();
    let cache = server.cache("batch-absent").await;
    let calls = Calls::default();
    let found = products(&cache, &calls, &[1001, 1002]).await.unwrap();
    assert_eq!(sorted(&found), expected([1002]));
    cache.settle().await;
    let found = products(&cache, &calls, &[1001, 1002]).await.unwrap();
    assert_eq!(sorted(&found), expected([1002]));
    assert_eq!(
        calls.take(),
        vec![vec![1001, 1002], vec![1001]],
        "without none_ttl, an absent id is asked for again"
    );

    let found = products_remembering_absent(&cache, &calls, &[3, 4])
        .await
        .unwrap();
    assert_eq!(sorted(&found), expected([4]));
    cache.settle().await;
    let found = products_remembering_absent(&cache, &calls, &[3, 4])
        .await
        .unwrap();
    assert_eq!(sorted(&found), expected([4]));
    assert_eq!(
        calls.take(),
        vec![vec![3, 4]],
        "with none_ttl, 3 is remembered as absent"
    );
}

#[tokio::test]
async fn other_arguments_take_their_part_in_each_key() {
    let server = RedisServer::start();
    let cache = server.cache("batch-tenant").await;
    let calls = Calls::default();
    let acme = tenant_products(&cache, &calls, "acme", &[1, 2])
        .await
        .unwrap();
    let globex = tenant_products(&cache, &calls, "globex", &[1, 2])
        .await
        .unwrap();
    assert_eq!(acme[&1], "acme 1");
    assert_eq!(globex[&1], "globex 1");
    cache.settle().await;
    assert_eq!(calls.take().len(), 2, "each tenant loads its own");
    assert_eq!(
        invalidate_tenant_products(&cache, "acme", &[1])
            .await
            .unwrap(),
        1
    );
    let globex = tenant_products(&cache, &calls, "globex", &[1, 2])
        .await
        .unwrap();
    assert_eq!(globex[&1], "globex 1");
    assert!(calls.take().is_empty(), "globex's entries stayed");
    assert_eq!(
        tenant_products_key("acme", 7).as_str(),
        "tenant:acme:product:7"
    );
}

/// Loads that wait at a gate until the test opens it, recording their ids.
struct Gated {
    calls: Calls,
    entered: Notify,
    open: Notify,
}

impl Gated {
    fn new() -> Gated {
        Gated {
            calls: Calls::default(),
            entered: Notify::new(),
            open: Notify::new(),
        }
    }
}

#[redis_cached(key = "product:<id>:v1", ttl = "60s", cache = cache, batch)]
async fn gated_products(
    cache: &Cache,
    gate: &Gated,
    ids: &[u64],
) -> Result<HashMap<u64, String>, String> {
    gate.calls.note(ids.iter().copied());
    gate.entered.notify_one();
    gate.open.notified().await;
    Ok(ids.iter().map(|&id| (id, product(id))).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_overlapping_ids_load_each_id_once() {
    let server = RedisServer::start();
    // Two caches: two processes, each with its own connections and loads in flight.
    let (first, second) = (
        server.cache("batch-two").await,
        server.cache("batch-two").await,
    );
    let (gate_one, gate_two) = (Gated::new(), Gated::new());
    let one = gated_products(&first, &gate_one, &[1, 2, 3, 4]);
    let mut one = Box::pin(one);
    // The first holds the leases of 1..=4 while its load runs.
    tokio::select! {
        _ = &mut one => panic!("the gated load answered"),
        () = gate_one.entered.notified() => {}
    }
    let two = gated_products(&second, &gate_two, &[3, 4, 5, 6]);
    let mut two = Box::pin(two);
    tokio::select! {
        _ = &mut two => panic!("the gated load answered"),
        () = gate_two.entered.notified() => {}
    }
    assert_eq!(
        gate_two.calls.take(),
        vec![vec![5, 6]],
        "3 and 4 are the first's to load"
    );
    gate_one.open.notify_one();
    gate_two.open.notify_one();
    let (one, two) = tokio::join!(one, two);
    assert_eq!(sorted(&one.unwrap()), expected(1..=4));
    assert_eq!(sorted(&two.unwrap()), expected(3..=6));
    assert_eq!(gate_one.calls.take(), vec![vec![1, 2, 3, 4]]);
    assert!(
        gate_two.calls.take().is_empty(),
        "3 and 4 were waited for, not loaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_a_batch_load_keeps_that_id_out_of_the_cache() {
    let server = RedisServer::start();
    let cache = server.cache("batch-race").await;
    let mut admin = server.conn().await;
    let gate = Gated::new();
    let load = gated_products(&cache, &gate, &[1, 2]);
    let mut load = Box::pin(load);
    tokio::select! {
        _ = &mut load => panic!("the gated load answered"),
        () = gate.entered.notified() => {}
    }
    // The data behind 1 changes while the load that read it runs.
    invalidate_gated_products(&cache, &[1]).await.unwrap();
    gate.open.notify_one();
    let found = load.await.unwrap();
    assert_eq!(
        sorted(&found),
        expected([1, 2]),
        "its caller still gets what it loaded"
    );
    cache.settle().await;
    let key_of = |id: u64| cache.redis_key(&one_product_key(id));
    assert_eq!(
        get_raw(&mut admin, &key_of(1)).await,
        None,
        "the stale value of 1 is not stored"
    );
    assert!(
        get_raw(&mut admin, &key_of(2)).await.is_some(),
        "2 is stored"
    );
}

#[tokio::test]
async fn a_local_caller_of_an_id_in_a_batch_load_joins_it() {
    let server = RedisServer::start();
    let cache = server.cache("batch-join").await;
    let gate = Gated::new();
    let calls = Calls::default();
    let load = gated_products(&cache, &gate, &[1, 2]);
    let mut load = Box::pin(load);
    tokio::select! {
        _ = &mut load => panic!("the gated load answered"),
        () = gate.entered.notified() => {}
    }
    let single = one_product(&cache, &calls, 2);
    let mut single = Box::pin(single);
    let batch = products(&cache, &calls, &[2, 3]);
    let mut batch = Box::pin(batch);
    // Both park on the running load of 2 (the batch loads 3 meanwhile).
    let joined = async {
        let coalesced = || async { cache.stats().coalesced >= 2 };
        assert!(
            eventually(Duration::from_secs(10), coalesced).await,
            "both joined"
        );
    };
    tokio::select! {
        _ = &mut single => panic!("answered before the load it joined"),
        _ = &mut batch => panic!("answered before the load it joined"),
        () = joined => {}
    }
    gate.open.notify_one();
    let (found, single, batch) = tokio::join!(load, single, batch);
    assert_eq!(sorted(&found.unwrap()), expected([1, 2]));
    assert_eq!(single.unwrap(), product(2));
    assert_eq!(sorted(&batch.unwrap()), expected([2, 3]));
    assert_eq!(calls.take(), vec![vec![3]], "2 was joined, only 3 loaded");
}

#[tokio::test]
async fn with_redis_down_the_loader_answers_every_id() {
    let refusing = RefusingPort::new();
    let cache = Cache::builder(&refusing.url())
        .namespace("batch-down")
        .op_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let calls = Calls::default();
    let found = products(&cache, &calls, &[1, 2, 3]).await.unwrap();
    assert_eq!(sorted(&found), expected([1, 2, 3]));
    assert_eq!(calls.take(), vec![vec![1, 2, 3]]);
    let error = failing(&cache, &calls, &[1]).await.unwrap_err();
    assert!(error.contains("down"), "{error}");
}

#[tokio::test]
async fn an_in_memory_cache_loads_the_missing_ids_once() {
    let cache = Cache::in_memory(1_000);
    let calls = Calls::default();
    let found = products(&cache, &calls, &[1, 2]).await.unwrap();
    assert_eq!(sorted(&found), expected([1, 2]));
    let found = products(&cache, &calls, &[1, 2, 3, 4]).await.unwrap();
    assert_eq!(sorted(&found), expected(1..=4));
    assert_eq!(calls.take(), vec![vec![1, 2], vec![3, 4]]);
    assert_eq!(invalidate_products(&cache, &[1, 2]).await.unwrap(), 2);
    let found = products(&cache, &calls, &[1, 4]).await.unwrap();
    assert_eq!(sorted(&found), expected([1, 4]));
    assert_eq!(calls.take(), vec![vec![1]]);
}

#[tokio::test]
async fn a_disabled_cache_calls_the_loader_with_every_id() {
    let cache = Cache::disabled();
    let calls = Calls::default();
    let found = products(&cache, &calls, &[1, 2, 2]).await.unwrap();
    assert_eq!(sorted(&found), expected([1, 2]));
    assert_eq!(calls.take(), vec![vec![1, 2]]);
}

#[tokio::test]
async fn fetch_many_is_the_engine_without_the_attribute() {
    let server = RedisServer::start();
    let cache = server.cache("batch-api").await;
    let policy = Policy::new("api", Duration::from_secs(60)).unwrap();
    let key_of = |id: &u64| Key::builder().text("product:").part(id).text(":v1").build();
    let calls = Calls::default();
    let load = |ids: Vec<u64>| {
        calls.note(ids.iter().copied());
        async move { Ok::<_, String>(ids.into_iter().map(|id| (id, product(id))).collect()) }
    };
    let found: HashMap<u64, String> = cache
        .fetch_many([1, 2], key_of, &policy, load)
        .await
        .unwrap();
    assert_eq!(sorted(&found), expected([1, 2]));
    cache.settle().await;
    // The attribute's function reads the same entries.
    let found = products(&cache, &calls, &[1, 2, 3]).await.unwrap();
    assert_eq!(sorted(&found), expected(1..=3));
    assert_eq!(calls.take(), vec![vec![1, 2], vec![3]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_ids_spread_over_every_primary_are_read_and_loaded_once() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let cluster = cached_redis_tests::RedisCluster::start();
    let urls = cluster.urls();
    let cache = Cache::cluster_builder(&urls.iter().map(String::as_str).collect::<Vec<_>>())
        .namespace("batch-cluster")
        .op_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let calls = Calls::default();
    let ids: Vec<u64> = (0..60).collect();
    let found = products(&cache, &calls, &ids[..40]).await.unwrap();
    assert_eq!(sorted(&found), expected(0..40));
    cache.settle().await;
    let found = products(&cache, &calls, &ids).await.unwrap();
    assert_eq!(sorted(&found), expected(0..60));
    assert_eq!(
        calls.take(),
        vec![(0..40).collect::<Vec<_>>(), (40..60).collect()],
        "each id loaded once, the cached ones read from their primaries"
    );
    cache.settle().await;
    let owners: HashSet<u16> = ids
        .iter()
        .filter_map(|&id| cluster.primary_holding(&cache.redis_key(&one_product_key(id))))
        .collect();
    assert_eq!(
        owners.len(),
        cluster.primaries().len(),
        "the ids cover every primary"
    );
    assert_eq!(invalidate_products(&cache, &ids).await.unwrap(), 60);
    let found = products(&cache, &calls, &ids[..3]).await.unwrap();
    assert_eq!(sorted(&found), expected(0..3));
    assert_eq!(calls.take(), vec![vec![0, 1, 2]]);
    assert_eq!(one_product(&cache, &calls, 1).await.unwrap(), product(1));
    assert!(
        calls.take().is_empty(),
        "the single-id function reads the batch's entry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_lets_every_lease_go_and_another_process_loads_at_once() {
    let server = RedisServer::start();
    let (first, second) = (
        server.cache("batch-cancel").await,
        server.cache("batch-cancel").await,
    );
    let gate = Gated::new();
    let load = gated_products(&first, &gate, &[1, 2, 3]);
    let mut load = Box::pin(load);
    tokio::select! {
        _ = &mut load => panic!("the gated load answered"),
        () = gate.entered.notified() => {}
    }
    drop(load);
    // The leases go back in the background, at once: not after lock_ttl (5 s).
    let admin = server.conn().await;
    let leases: Vec<String> = [1, 2, 3]
        .map(|id| format!("{}:lease", first.redis_key(&one_product_key(id))))
        .to_vec();
    let released = eventually(Duration::from_secs(2), || {
        let (mut admin, leases) = (admin.clone(), leases.clone());
        async move {
            for lease in &leases {
                if get_raw(&mut admin, lease).await.is_some() {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(released, "every lease let go well within its TTL");
    // The other process then takes them and loads the three at once.
    let calls = Calls::default();
    let found = tokio::time::timeout(
        Duration::from_secs(2),
        products(&second, &calls, &[1, 2, 3]),
    )
    .await
    .expect("answered well within the lease's TTL");
    assert_eq!(sorted(&found.unwrap()), expected(1..=3));
    assert_eq!(calls.take(), vec![vec![1, 2, 3]]);
    assert_no_state_left(&first).await;
}

#[redis_cached(key = "packed:<id>", ttl = "60s", codec = "msgpack", compress_above = "64B", cache = cache, batch)]
async fn packed_products(
    cache: &Cache,
    calls: &Calls,
    ids: &[u64],
) -> Result<HashMap<u64, String>, String> {
    calls.note(ids.iter().copied());
    Ok(ids.iter().map(|&id| (id, product(id).repeat(20))).collect())
}

#[redis_cached(key = "packed:<id>", ttl = "60s", codec = "msgpack", compress_above = "64B", cache = cache)]
async fn packed_product(cache: &Cache, calls: &Calls, id: u64) -> Result<String, String> {
    calls.note([id]);
    Ok(product(id).repeat(20))
}

#[tokio::test]
async fn codecs_and_compression_apply_to_each_entry_and_invalidate_all_removes_them() {
    let server = RedisServer::start();
    let cache = server.cache("batch-codec").await;
    let mut admin = server.conn().await;
    let calls = Calls::default();
    let found = packed_products(&cache, &calls, &[1, 2]).await.unwrap();
    assert_eq!(found[&1], product(1).repeat(20));
    cache.settle().await;
    let stored = get_raw(&mut admin, &cache.redis_key(&packed_product_key(1)))
        .await
        .expect("stored");
    assert!(
        serde_json::from_slice::<serde_json::Value>(&stored).is_err(),
        "stored in MessagePack, compressed, not JSON"
    );
    assert_eq!(
        packed_product(&cache, &calls, 2).await.unwrap(),
        product(2).repeat(20)
    );
    assert_eq!(
        calls.take(),
        vec![vec![1, 2]],
        "the single function read the batch's entry"
    );

    assert_eq!(invalidate_all_packed_products(&cache).await.unwrap(), 2);
    packed_products(&cache, &calls, &[1, 2]).await.unwrap();
    assert_eq!(calls.take(), vec![vec![1, 2]], "both were removed");
}

#[redis_cached(key = "near:<id>", ttl = "60s", near = "5s", cache = cache, batch)]
async fn near_rows(cache: &Cache, db: &HeldDb, ids: &[u32]) -> Result<HashMap<u32, u64>, String> {
    let version = db.read().await?;
    Ok(ids
        .iter()
        .map(|&id| (id, version * 1000 + u64::from(id)))
        .collect())
}

#[redis_cached(key = "near:<id>", ttl = "60s", near = "5s", cache = cache)]
async fn near_row(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    Ok(db.read().await? * 1000 + u64::from(id))
}

/// Waits for this cache's write-backs, and for the invalidation messages they caused to be
/// applied to its near copies: a copy read afterwards is not dropped by its own store.
async fn settle_near(cache: &Cache) {
    cache.settle().await;
    let stored = std::time::Instant::now();
    let applied = || async { cached_redis::__private::near_applied_since(cache, stored) };
    assert!(
        eventually(Duration::from_secs(10), applied).await,
        "the store's messages applied"
    );
}

fn rows(version: u64, ids: impl IntoIterator<Item = u32>) -> HashMap<u32, u64> {
    ids.into_iter()
        .map(|id| (id, version * 1000 + u64::from(id)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_near_a_batch_answers_from_copies_without_a_command_and_reads_only_the_rest() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "batch-near", Duration::from_secs(5)).await;
    let mut admin = server.conn().await;
    let db = HeldDb::new(1);
    assert_eq!(near_rows(&cache, &db, &[1, 2, 3]).await, Ok(rows(1, 1..=3)));
    settle_near(&cache).await;
    // Read from Redis, and kept near.
    assert_eq!(near_rows(&cache, &db, &[1, 2, 3]).await, Ok(rows(1, 1..=3)));
    assert_eq!(cache.stats().near_entries, 3);

    let (mgets, near_hits) = (
        command_calls(&mut admin, "mget").await,
        cache.stats().near_hits,
    );
    db.set_version(2);
    assert_eq!(near_rows(&cache, &db, &[1, 2, 3]).await, Ok(rows(1, 1..=3)));
    assert_eq!(command_calls(&mut admin, "mget").await, mgets, "no command");
    assert_eq!(cache.stats().near_hits - near_hits, 3);
    // The single-id function with the same key shares the copies.
    assert_eq!(near_row(&cache, &db, 2).await, Ok(1002));
    assert_eq!(cache.stats().near_hits - near_hits, 4);

    // Only the id without a copy is read.
    let reads = db.reads();
    let found = near_rows(&cache, &db, &[1, 4]).await.unwrap();
    assert_eq!(found, HashMap::from([(1, 1001), (4, 2004)]));
    assert_eq!(db.reads() - reads, 1, "4 loaded");
    assert_eq!(command_calls(&mut admin, "mget").await - mgets, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_from_another_process_or_connection_drops_a_batchs_copies() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "batch-near-other", Duration::from_secs(5)).await;
    let writer = server.cache("batch-near-other").await;
    let mut admin = server.conn().await;
    let db = HeldDb::new(1);
    near_rows(&cache, &db, &[1, 2]).await.unwrap();
    settle_near(&cache).await;
    near_rows(&cache, &db, &[1, 2]).await.unwrap();
    assert_eq!(cache.stats().near_entries, 2);
    db.set_version(2);
    // Another process's invalidation of 1, a plain DEL of 2 from another connection.
    invalidate_near_row(&writer, 1).await.unwrap();
    let _: u64 = redis::cmd("DEL")
        .arg(cache.redis_key(&near_row_key(2)))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            near_rows(&cache, &db, &[1, 2]).await == Ok(rows(2, 1..=2))
        })
        .await,
        "both copies were dropped"
    );
}

/// The in-flight race: the batch's `MGET` reply is held while another process invalidates
/// the key, then let through. The caller that asked first may get the old value, but it must
/// not become a near copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reply_an_invalidation_overtook_is_not_kept() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let patient = Duration::from_secs(60);
    let cache = near_cache_timed(
        &proxy.url(),
        "batch-near-race",
        Duration::from_secs(5),
        patient,
    )
    .await;
    let writer = server.cache("batch-near-race").await;
    let db = HeldDb::new(1);
    // The first call's MGET is the first command on a connection made after the tracker's:
    // the reads connection, which only reads.
    let reads = proxy.connections();
    assert_eq!(near_rows(&cache, &db, &[1]).await, Ok(rows(1, [1])));
    cache.settle().await; // stored in Redis, not near
    proxy.hold_replies(reads);
    let held = tokio::spawn({
        let (cache, db) = (cache.clone(), Arc::new(HeldDb::new(99)));
        async move { near_rows(&cache, &db, &[1]).await }
    });
    db.set_version(2);
    assert!(invalidate_near_row(&writer, 1).await.unwrap());
    let invalidated = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || async {
            cached_redis::__private::near_applied_since(&cache, invalidated)
        })
        .await,
        "the tracking connection applied the invalidation"
    );
    proxy.release_replies(reads);
    assert_eq!(
        held.await.unwrap(),
        Ok(rows(1, [1])),
        "the call that asked first"
    );
    let before = cache.stats();
    assert_eq!(
        near_rows(&cache, &db, &[1]).await,
        Ok(rows(2, [1])),
        "not the overtaken reply"
    );
    assert_eq!(cache.stats().near_hits, before.near_hits);
    assert!(cache.stats().near_rejected > 0);
}
