//! Adversarial tests of the background give-back (`read/give_back.rs`) and of the hand-decoded
//! `SET NX` + `GET` pipeline after a miss (`lease/after_miss.rs`), against real `redis-server`s.
//! Windows are held by the server itself (`CLIENT PAUSE ... WRITE`, which holds writes while
//! reads are served) or by a proxy holding the writes connection's replies.

use std::time::Duration;

use cached_redis::{Cache, Key, Policy};
use cached_redis_tests::{
    CancelAfter, Gate, Proxy, RedisServer, command_calls, eventually, get_raw, pttl, set_px,
};

/// A guard against hangs only.
const HANG: Duration = Duration::from_secs(60);

fn policy() -> Policy {
    Policy::new("adv-give-back", Duration::from_secs(60)).unwrap()
}

fn lease_of(cache: &Cache, key: &Key) -> String {
    format!("{}:lease", cache.redis_key(key))
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

async fn cmd(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> redis::Value {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn).await.expect(args[0])
}

/// Claim attacked: guarantee 5 (an open breaker skips Redis) and 9 / "no resource growth".
/// With the write breaker open (writes paused by `CLIENT PAUSE WRITE`, reads served), a miss's
/// lease request is skipped (`Error::Unavailable`: nothing was sent), yet its `LeaseGuard` stays
/// armed (`acquire` sets `armed = true` for any error) and its drop spawns a give-back task that
/// runs for max(lock_ttl, 60 s), outside the breaker, sending `EVALSHA release` to Redis every
/// second for a lease that was never asked for. One task per cold-key call: 200 calls leave 200
/// tasks, each retrying into the paused connection, and Redis runs every queued try once the
/// pause ends.
///
/// Failed on e645228 (found by the adversary, fixed since: a claim whose request the open
/// breaker skipped is not armed):
///   200 calls that skipped the lease request (write breaker open) left 200 more tasks alive
///   (7 -> 207 after the calls); printed: redis_errors 3 -> 205 with no call counting one, EVALSHA
///   run by Redis once unpaused: 275
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_skipped_lease_request_spawns_a_minute_long_give_back() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let cache = Cache::builder(&server.url())
        .namespace("adv-gb-1")
        .op_timeout(Duration::from_millis(200))
        .breaker_threshold(2)
        .breaker_cooldown(Duration::from_secs(600))
        .lock_ttl(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    // Connections made, script loaded.
    let warm: Result<u64, String> = cache
        .fetch(&Key::raw("warm"), &policy(), async { Ok(0) })
        .await;
    assert_eq!(warm, Ok(0));
    cache.settle().await;

    cmd(&mut admin, &["CLIENT", "PAUSE", "120000", "WRITE"]).await;
    // Two cold keys whose lease requests time out open the write breaker (their give-backs are
    // legitimate: their SET NX may land).
    for i in 0..2 {
        let key = Key::raw(format!("opening-{i}"));
        let got: Result<u64, String> = cache.fetch(&key, &policy(), async { Ok(1) }).await;
        assert_eq!(got, Ok(1));
    }
    let errors_before = cache.stats().redis_errors;
    let before = alive_tasks();

    // Reads are served, writes are skipped: every call asks Redis for nothing but its GET.
    let calls = 200;
    for i in 0..calls {
        let key = Key::raw(format!("cold-{i}"));
        let started = std::time::Instant::now();
        let got: Result<u64, String> = cache.fetch(&key, &policy(), async { Ok(2) }).await;
        assert_eq!(got, Ok(2));
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "a call with the write breaker open skips the lease request"
        );
    }
    let after = alive_tasks();
    // Let the tasks try once more, then see what the counters say.
    let grew = eventually(Duration::from_secs(3), || async {
        cache.stats().redis_errors > errors_before + calls as u64
    })
    .await;
    let errors_after = cache.stats().redis_errors;
    let queued_before = command_calls(&mut admin, "evalsha").await;
    cmd(&mut admin, &["CLIENT", "UNPAUSE"]).await;
    let _ = eventually(Duration::from_secs(5), || {
        let mut admin = admin.clone();
        async move { command_calls(&mut admin, "evalsha").await > queued_before }
    })
    .await;
    let ran = command_calls(&mut admin, "evalsha").await - queued_before;
    eprintln!(
        "tasks {before} -> {after}; redis_errors {errors_before} -> {errors_after} with no call \
         made (grew past +{calls}: {grew}); EVALSHA run by Redis once unpaused: {ran}"
    );
    assert!(
        after <= before + 5,
        "{calls} calls that skipped the lease request (write breaker open) left {} more tasks \
         alive ({before} -> {after} after the calls)",
        after - before
    );
}

/// Claim attacked: a late give-back never frees a lease that is someone else's. A call's
/// `SET NX` lands but its reply is held (proxy), so the call falls back and its give-back
/// waits for its answer; meanwhile its lease is replaced by another process's. Nothing the
/// give-back sends may free it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_late_give_back_leaves_anothers_lease() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let proxy = Proxy::start(server.port()).await;
    let builder = Cache::builder(&proxy.url())
        .namespace("adv-gb-2")
        .op_timeout(Duration::from_millis(200))
        .breaker_threshold(100)
        .lock_ttl(Duration::from_secs(30));
    let (cache, writes) = proxy.cache_and_writes(&mut admin, builder).await;
    let key = Key::raw("k");
    let lease = lease_of(&cache, &key);
    let released_before = command_calls(&mut admin, "evalsha").await;

    proxy.hold_replies(writes);
    let got: Result<u64, String> = cache.fetch(&key, &policy(), async { Ok(1) }).await;
    assert_eq!(got, Ok(1), "the caller fell back to its loader");
    // Its give-back's first try reaches Redis (its reply is held), freeing our own lease.
    let first_try = eventually(HANG, || {
        let mut admin = admin.clone();
        async move { command_calls(&mut admin, "evalsha").await > released_before }
    })
    .await;
    assert!(first_try);
    // Another process takes the lease now, while the give-back waits for its answer.
    set_px(&mut admin, &lease, "other-process", 30_000).await;
    proxy.release_replies(writes);
    let settled = eventually(Duration::from_secs(5), || {
        let mut admin = admin.clone();
        async move {
            let a = command_calls(&mut admin, "evalsha").await;
            tokio::time::sleep(Duration::from_millis(1_200)).await;
            command_calls(&mut admin, "evalsha").await == a
        }
    })
    .await;
    assert!(settled, "the give-back stops once answered");
    assert_eq!(
        get_raw(&mut admin, &lease).await.as_deref(),
        Some(&b"other-process"[..]),
        "another process's lease survives every retried give-back"
    );
    assert!(pttl(&mut admin, &lease).await > 20_000);
}

/// Claim attacked: the hand-decoded pipeline with keys of the wrong type. A value key holding a
/// list (the pipeline's `GET` answers `WRONGTYPE` after its `SET NX` took the lease) and a lease
/// key holding a list (`SET NX` answers nil: held) must both end in one load, stored, with no
/// lease left behind and no wait for the caller's own lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_wrong_type_keys_after_a_miss() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let cache = server.cache("adv-gb-3").await;
    // Value key of the wrong type.
    let key = Key::raw("v");
    let _: () = redis::cmd("RPUSH")
        .arg(cache.redis_key(&key))
        .arg("x")
        .query_async(&mut admin)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let got: Result<String, String> = cache
        .fetch(&key, &policy(), async { Ok("loaded".to_owned()) })
        .await;
    assert_eq!(got.as_deref(), Ok("loaded"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no wait for its own lease"
    );
    cache.settle().await;
    let hit: Result<String, String> = cache
        .fetch(&key, &policy(), async { Err("loaded twice".to_owned()) })
        .await;
    assert_eq!(hit.as_deref(), Ok("loaded"));
    assert_eq!(get_raw(&mut admin, &lease_of(&cache, &key)).await, None);

    // Lease key of the wrong type (no TTL): taken over by the script.
    let key = Key::raw("l");
    let _: () = redis::cmd("RPUSH")
        .arg(lease_of(&cache, &key))
        .arg("x")
        .query_async(&mut admin)
        .await
        .unwrap();
    let got: Result<String, String> = cache
        .fetch(&key, &policy(), async { Ok("loaded".to_owned()) })
        .await;
    assert_eq!(got.as_deref(), Ok("loaded"));
    cache.settle().await;
    let hit: Result<String, String> = cache
        .fetch(&key, &policy(), async { Err("loaded twice".to_owned()) })
        .await;
    assert_eq!(hit.as_deref(), Ok("loaded"));
}

/// Claim attacked: `OOM` (maxmemory under noeviction) on the pipeline's `SET NX` is an error
/// reply, not an outage: the lease script is asked, the call loads without a lease (counted in
/// `writes_refused`), the breaker stays closed, and the give-back of the claim ends at once
/// (its `RELEASE` only reads, so Redis answers it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_oom_on_the_pipeline() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let cache = server.cache("adv-gb-4").await;
    let warm: Result<u64, String> = cache
        .fetch(&Key::raw("warm"), &policy(), async { Ok(0) })
        .await;
    assert_eq!(warm, Ok(0));
    cache.settle().await;
    let base = alive_tasks();
    cmd(
        &mut admin,
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    )
    .await;
    cmd(&mut admin, &["CONFIG", "SET", "maxmemory", "1"]).await;
    for i in 0..20 {
        let key = Key::raw(format!("oom-{i}"));
        let got: Result<u64, String> = cache.fetch(&key, &policy(), async { Ok(7) }).await;
        assert_eq!(got, Ok(7));
    }
    let stats = cache.stats();
    assert_eq!(stats.writes_refused, 20, "{stats:?}");
    assert_eq!(
        stats.fallbacks, 0,
        "an answered OOM is no outage: {stats:?}"
    );
    let flat = eventually(Duration::from_secs(5), || async {
        alive_tasks() <= base + 1
    })
    .await;
    assert!(
        flat,
        "give-backs ended: {} tasks, {base} before",
        alive_tasks()
    );
    cmd(&mut admin, &["CONFIG", "SET", "maxmemory", "0"]).await;
    let got: Result<u64, String> = cache
        .fetch(&Key::raw("oom-0"), &policy(), async { Ok(8) })
        .await;
    assert_eq!(got, Ok(8), "caching resumes");
}

/// Claim attacked: a leader cancelled mid-load gives its lease back promptly and a waiter in
/// another process (another cache) takes over at once, not after `lock_ttl`; and dropping the
/// cache while a give-back retries leaves no task behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_cancelled_leader_wakes_other_process_and_cache_drop_ends_give_back() {
    let server = RedisServer::start();
    let a = server.cache("adv-gb-5").await;
    let b = server.cache("adv-gb-5").await;
    let key = Key::raw("k");
    let gate = Gate::new();
    let loading = Gate::new();
    let (l, g) = (loading.clone(), gate.clone());
    let leader = {
        let (a, key) = (a.clone(), key.clone());
        tokio::spawn(async move {
            a.fetch(&key, &policy(), async move {
                l.open();
                g.passed().await;
                Ok::<u64, String>(1)
            })
            .await
        })
    };
    loading.passed().await;
    let waiter = {
        let (b, key) = (b.clone(), key.clone());
        tokio::spawn(async move {
            let got: Result<u64, String> = b.fetch(&key, &policy(), async { Ok(2) }).await;
            (got, std::time::Instant::now())
        })
    };
    // The waiter is waiting (it found the lease held) once it counted its wait.
    let waiting = eventually(HANG, || async { b.stats().lock_waits >= 1 }).await;
    assert!(waiting, "{:?}", b.stats());
    let cancelled = std::time::Instant::now();
    leader.abort();
    let (got, at) = waiter.await.unwrap();
    assert_eq!(got, Ok(2));
    assert!(
        at - cancelled < Duration::from_secs(2),
        "woken {:?} after the cancellation (lock_ttl is 10 s)",
        at - cancelled
    );

    // A give-back retrying against a dead Redis ends once its cache is dropped.
    let base = alive_tasks();
    let cancel = CancelAfter::new(
        {
            let a = a.clone();
            async move {
                a.fetch(
                    &Key::raw("other"),
                    &policy(),
                    std::future::pending::<Result<u64, String>>(),
                )
                .await
            }
        },
        3,
    );
    let _ = cancel.await;
    drop(server);
    drop(a);
    drop(b);
    let flat = eventually(Duration::from_secs(5), || async { alive_tasks() <= base }).await;
    assert!(flat, "{} tasks alive, {base} before", alive_tasks());
}

/// Claim attacked: "must not hammer Redis once back". One give-back during a write pause
/// (`CLIENT PAUSE WRITE`, as a failover does): each try times out after `op_timeout` but stays
/// queued on the connection, and the next try is sent behind it, so once writes resume Redis
/// runs every try, not one. Here a single cold-key call (its lease request timed out, so its
/// give-back is legitimate) leaves a queue of release scripts that grows by one a second for a
/// minute; a thousand such calls at the start of a pause would leave 60,000.
///
/// Failed on e645228 (found by the adversary, fixed since: a give-back waits for its request's
/// answer and sends again only where the request was lost with its connection or refused):
///   one give-back queued 8 release scripts while writes were paused (Redis ran them all once
///   they resumed)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_one_give_back_queues_a_release_per_try_during_a_write_pause() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let cache = Cache::builder(&server.url())
        .namespace("adv-gb-6")
        .op_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let warm: Result<u64, String> = cache
        .fetch(&Key::raw("warm"), &policy(), async { Ok(0) })
        .await;
    assert_eq!(warm, Ok(0));
    cache.settle().await;
    cmd(&mut admin, &["CLIENT", "PAUSE", "120000", "WRITE"]).await;
    let errors = cache.stats().redis_errors;
    let got: Result<u64, String> = cache
        .fetch(&Key::raw("cold"), &policy(), async { Ok(1) })
        .await;
    assert_eq!(got, Ok(1));
    assert_eq!(
        cache.stats().redis_errors,
        errors + 1,
        "the lease request timed out"
    );
    // The pause lasts 2 s, as a failover's does: the fault's length, not a synchronisation.
    // A give-back that sent again after each `op_timeout` queued some 8 tries by then.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = command_calls(&mut admin, "evalsha").await;
    cmd(&mut admin, &["CLIENT", "UNPAUSE"]).await;
    // Redis runs what was queued; the count settles once the give-back is answered.
    let mut seen = before;
    let _ = eventually(HANG, || {
        let mut admin = admin.clone();
        let previous = seen;
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = command_calls(&mut admin, "evalsha").await;
            now > previous && now == command_calls(&mut admin, "evalsha").await
        }
    })
    .await;
    seen = command_calls(&mut admin, "evalsha").await;
    let ran = seen - before;
    assert!(
        ran <= 2,
        "one give-back queued {ran} release scripts while writes were paused (Redis ran them \
         all once they resumed)"
    );
}

/// Claim attacked: the give-back task holds the cache weakly: dropping the cache while two
/// hundred give-backs wait on paused writes ends them all (within a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_dropping_the_cache_ends_its_give_backs() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let cache = Cache::builder(&server.url())
        .namespace("adv-gb-7")
        .op_timeout(Duration::from_millis(200))
        .breaker_threshold(1_000)
        .build()
        .await
        .unwrap();
    let warm: Result<u64, String> = cache
        .fetch(&Key::raw("warm"), &policy(), async { Ok(0) })
        .await;
    assert_eq!(warm, Ok(0));
    cache.settle().await;
    let base = alive_tasks();
    cmd(&mut admin, &["CLIENT", "PAUSE", "120000", "WRITE"]).await;
    // Together, so that every lease request times out before the breaker would open.
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let (cache, key) = (cache.clone(), Key::raw(format!("cold-{i}")));
            tokio::spawn(async move { cache.fetch(&key, &policy(), async { Ok(2) }).await })
        })
        .collect();
    for call in calls {
        let got: Result<u64, String> = call.await.unwrap();
        assert_eq!(got, Ok(2));
    }
    assert!(alive_tasks() > base + 100, "the give-backs are running");
    drop(cache);
    let ended = eventually(Duration::from_secs(5), || async { alive_tasks() <= base }).await;
    cmd(&mut admin, &["CLIENT", "UNPAUSE"]).await;
    assert!(ended, "{} tasks alive, {base} before", alive_tasks());
}

/// Claim attacked: guarantee 9 at every await of the miss path (the `GET`, the pipeline, the
/// load): a caller cancelled at its n-th poll leaves no lease for longer than its give-back
/// takes, and no task behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_cancelled_at_every_await_of_a_miss() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let cache = Cache::builder(&server.url())
        .namespace("adv-gb-8")
        .lock_ttl(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let warm: Result<u64, String> = cache
        .fetch(&Key::raw("warm"), &policy(), async { Ok(0) })
        .await;
    assert_eq!(warm, Ok(0));
    cache.settle().await;
    let base = alive_tasks();
    // Every poll count up to the first that reaches the loader (past it, the call only waits
    // for its loader and the renewal timer).
    for polls in 1..64 {
        let key = Key::raw(format!("k-{polls}"));
        let lease = lease_of(&cache, &key);
        let policy = policy();
        let loading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = loading.clone();
        let loader = async move {
            started.store(true, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<Result<u64, String>>().await
        };
        let call = cache.fetch(&key, &policy, loader);
        let dropped = CancelAfter::new(call, polls).await;
        assert!(dropped.is_none());
        let gone = eventually(Duration::from_secs(2), || {
            let (mut admin, lease) = (admin.clone(), lease.clone());
            async move { get_raw(&mut admin, &lease).await.is_none() }
        })
        .await;
        assert!(
            gone,
            "cancelled at poll {polls}: lease left ({} ms)",
            pttl(&mut admin, &lease).await
        );
        let flat = eventually(Duration::from_secs(2), || async { alive_tasks() <= base }).await;
        assert!(
            flat,
            "cancelled at poll {polls}: {} tasks, {base} before",
            alive_tasks()
        );
        if loading.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("the loader ran from poll {polls}");
            return;
        }
    }
    panic!("the loader never ran");
}

/// Claim attacked: one load per cold key across processes, through the pipeline (two caches
/// standing for two processes, twenty callers each, one of them a RESP3 connection if the
/// URL asks for one): exactly one load, everyone answered with its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_one_load_across_two_processes_resp2_and_resp3() {
    let server = RedisServer::start();
    let a = server.cache("adv-gb-9").await;
    let b = Cache::builder(&format!("{}?protocol=resp3", server.url()))
        .namespace("adv-gb-9")
        .op_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let loads = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let gate = Gate::new();
    let mut calls = Vec::new();
    for i in 0..40 {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (loads, gate) = (loads.clone(), gate.clone());
        calls.push(tokio::spawn(async move {
            cache
                .fetch(&Key::raw("cold"), &policy(), async move {
                    loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    gate.passed().await;
                    Ok::<String, String>("v\u{0}\u{ff}".to_owned())
                })
                .await
        }));
    }
    let waiting = eventually(HANG, || async {
        loads.load(std::sync::atomic::Ordering::SeqCst) >= 1
            && a.stats().lock_waits + b.stats().lock_waits >= 1
    })
    .await;
    assert!(waiting);
    gate.open();
    for call in calls {
        assert_eq!(call.await.unwrap().as_deref(), Ok("v\u{0}\u{ff}"));
    }
    assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A documented limit (guarantee 9), found by the adversary: a process whose runtime shuts
/// down (a deploy) while its leader loads. The leader's future is dropped, and its guard's
/// `Drop` spawns the give-back on a runtime that is shutting down, where the task never runs,
/// so the lease expires after `lock_ttl` and a caller in another process waits until then, and
/// no longer. As a bug test it failed on e645228 (and before: the drop guard spawned then too):
///   the other process waited 4.993002287s after the runtime shut down (lock_ttl 5 s)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_a_runtime_shut_down_mid_load_leaves_its_lease_to_expire() {
    let server = RedisServer::start();
    let b = server.cache("adv-gb-10").await;
    let url = server.url();
    let loading = Gate::new();
    let l = loading.clone();
    let (shut_tx, shut_rx) = std::sync::mpsc::channel::<()>();
    let process_a = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = Cache::builder(&url)
                .namespace("adv-gb-10")
                .lock_ttl(Duration::from_secs(5))
                .build()
                .await
                .unwrap();
            tokio::spawn(async move {
                let _: Result<u64, String> = a
                    .fetch(&Key::raw("k"), &policy(), async move {
                        l.open();
                        std::future::pending().await
                    })
                    .await;
            });
        });
        shut_rx.recv().unwrap();
        drop(rt);
    });
    loading.passed().await;
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            let got: Result<u64, String> =
                b.fetch(&Key::raw("k"), &policy(), async { Ok(2) }).await;
            (got, std::time::Instant::now())
        })
    };
    let waiting = eventually(HANG, || async { b.stats().lock_waits >= 1 }).await;
    assert!(waiting);
    let shut = std::time::Instant::now();
    shut_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || process_a.join().unwrap())
        .await
        .unwrap();
    let (got, at) = waiter.await.unwrap();
    assert_eq!(got, Ok(2));
    assert!(
        at - shut < Duration::from_secs(5) + Duration::from_millis(1_500),
        "the other process waited {:?} after the runtime shut down, past the lease's 5 s",
        at - shut
    );
}

/// Claim attacked: the hand-decoded pipeline on a cluster whose slot moves under it. `ASK`
/// (slot migrating, neither key on the old owner: both commands answered `ASK`) and `MOVED`
/// (the slot moved behind the client's back) must each end in one load, stored where the slot
/// now lives, read back as a hit, with no lease left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_pipeline_across_ask_and_moved() {
    use cached_redis_tests::{RedisCluster, SlotMove};
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let cache = Cache::cluster_builder(&urls.iter().map(String::as_str).collect::<Vec<_>>())
        .namespace("adv-gb-11")
        .op_timeout(Duration::from_secs(20))
        .build()
        .await
        .unwrap();
    let loads = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let fetch = |key: &'static str, value: u64| {
        let (cache, loads) = (cache.clone(), loads.clone());
        async move {
            let got: Result<u64, String> = cache
                .fetch(&Key::raw(key), &policy(), async move {
                    loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(value)
                })
                .await;
            cache.settle().await;
            got
        }
    };
    for (key, finish) in [("ask", false), ("moved", true)] {
        // Stored once to find its owner (and teach the client the slot map), then removed.
        assert_eq!(fetch(key, 1).await, Ok(1));
        let entry = cache.redis_key(&Key::raw(key));
        let from = cluster.primary_holding(&entry).expect("stored");
        assert!(cache.invalidate(&Key::raw(key)).await.unwrap());
        let to = cluster
            .primaries()
            .into_iter()
            .find(|p| *p != from)
            .unwrap();
        let moving = SlotMove::of(&cluster, &entry, from, to);
        moving.begin();
        if finish {
            moving.move_keys();
            moving.finish();
        }
        let logs = cached_redis_tests::capture_logs(tracing::Level::WARN);
        let before = loads.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(fetch(key, 2).await, Ok(2), "{key}");
        let third = fetch(key, 3).await;
        let stats = cache.stats();
        if finish {
            assert_eq!(third, Ok(2), "{key}: a hit after the store ({stats:?})");
            assert_eq!(
                loads.load(std::sync::atomic::Ordering::SeqCst),
                before + 1,
                "{key}"
            );
        } else {
            // While the slot migrates, the lease script over two keys the importing node does
            // not hold is answered TRYAGAIN: the call falls back (guarantee 5), nothing stored.
            eprintln!(
                "{key}: third call {third:?}; {stats:?}; warnings:\n{}",
                logs.text()
            );
            moving.move_keys();
            moving.finish();
        }
        let fourth = fetch(key, 4).await;
        assert_eq!(
            fetch(key, 5).await,
            fourth,
            "{key}: a hit once the move ended"
        );
        let lease = format!("{entry}:lease");
        let gone = eventually(Duration::from_secs(5), || {
            std::future::ready(cluster.primary_holding(&lease).is_none())
        })
        .await;
        assert!(
            gone,
            "{key}: lease left on {:?}",
            cluster.primary_holding(&lease)
        );
    }
}

/// Claim attacked: the hand-decoded pipeline under an ACL user without `SET`: the pipeline's
/// `SET NX` is answered `NOPERM` (an error reply, not an outage), the lease script is asked and
/// refused too, and the call falls back at once with the breaker still closed; its give-back
/// is answered (the lease is not ours) and ends, leaving no task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_acl_without_set_on_the_pipeline() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    cmd(
        &mut admin,
        &[
            "ACL", "SETUSER", "noset", "on", ">pw", "~*", "&*", "+@all", "-set",
        ],
    )
    .await;
    let url = format!("redis://noset:pw@127.0.0.1:{}", server.port());
    let cache = Cache::builder(&url)
        .namespace("adv-gb-12")
        .op_timeout(Duration::from_secs(2))
        .breaker_threshold(2)
        .build()
        .await
        .unwrap();
    let warm: Result<u64, String> = cache
        .fetch(&Key::raw("warm"), &policy(), async { Ok(0) })
        .await;
    assert_eq!(warm, Ok(0));
    let base = alive_tasks();
    for i in 0..10 {
        let started = std::time::Instant::now();
        let key = Key::raw(format!("k-{i}"));
        let got: Result<u64, String> = cache.fetch(&key, &policy(), async { Ok(5) }).await;
        assert_eq!(got, Ok(5));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered at once"
        );
    }
    let stats = cache.stats();
    assert_eq!(stats.loads, 11, "{stats:?}");
    let flat = eventually(Duration::from_secs(5), || async { alive_tasks() <= base }).await;
    assert!(flat, "{} tasks, {base} before", alive_tasks());
    let denied = command_calls(&mut admin, "set").await;
    eprintln!("{stats:?}; SET calls {denied}");
}
