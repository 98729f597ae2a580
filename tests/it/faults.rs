//! Fault injection against real redis-server processes: paused, black-holed, killed while
//! leases are held and waiters wait, a lease holder SIGKILLed mid-load, loaders slower than
//! `lock_ttl`, and storms of cancelled callers. Each test prints the figures it measured.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, redis_cached};
use cached_redis_tests::{RedisServer, eventually, get_raw, in_the_near_pass};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[redis_cached(key = "fault:<id>", ttl = "60s", cache = cache)]
async fn value(
    cache: &Cache,
    id: u32,
    loader: Duration,
    loads: &AtomicU32,
) -> Result<String, String> {
    loads.fetch_add(1, Ordering::SeqCst);
    if !loader.is_zero() {
        tokio::time::sleep(loader).await;
    }
    Ok(format!("value-{id}"))
}

async fn cache(url: &str, namespace: &str, lock_ttl: Duration) -> Cache {
    let builder = Cache::builder(url)
        .namespace(namespace)
        .op_timeout(Duration::from_millis(100))
        .lock_ttl(lock_ttl)
        .breaker_threshold(3)
        .breaker_cooldown(Duration::from_millis(300));
    in_the_near_pass(builder).build().await.unwrap()
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_costs_op_timeout_then_nothing_and_a_probe_resumes_caching() {
    let server = RedisServer::start();
    let cache = cache(&server.url(), "paused", Duration::from_secs(5)).await;
    let loads = AtomicU32::new(0);
    assert_eq!(
        value(&cache, 1, Duration::ZERO, &loads).await.unwrap(),
        "value-1"
    );
    cache.settle().await; // stored before Redis pauses

    let mut admin = server.conn().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut latencies = Vec::new();
    let mut skipped_redis = true;
    for i in 0..20 {
        let before = cache.stats();
        let started = Instant::now();
        assert_eq!(
            value(&cache, 1, Duration::ZERO, &loads).await.unwrap(),
            "value-1"
        );
        latencies.push(started.elapsed());
        let after = cache.stats();
        if i >= 5 {
            skipped_redis &= after.redis_errors == before.redis_errors
                && after.fallbacks == before.fallbacks + 1;
        }
    }
    let first = latencies[0];
    let open: Vec<f64> = latencies[5..].iter().map(|d| micros(*d)).collect();
    let worst_open = open.iter().copied().fold(0.0, f64::max);
    println!(
        "paused redis: first call {:.1} ms (op_timeout 100 ms); with the breaker open, worst {worst_open:.0} µs per call",
        first.as_secs_f64() * 1e3
    );
    assert!(
        first < Duration::from_millis(750),
        "bounded by op_timeout, not by the 1.5 s pause: {first:?}"
    );
    assert!(
        skipped_redis,
        "with the breaker open, calls go straight to the loader without asking Redis: {open:?}"
    );

    // Once Redis answers again, a probe closes the breaker and hits resume.
    let resumed_after = Instant::now();
    assert!(
        eventually(Duration::from_secs(4), || async {
            let hits = cache.stats().hits;
            value(&cache, 1, Duration::ZERO, &loads).await.unwrap();
            cache.stats().hits > hits
        })
        .await
    );
    println!(
        "paused redis: hits resumed {:?} after the first retry",
        resumed_after.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_a_lease_is_held_and_a_waiter_waits_nobody_hangs() {
    let mut server = RedisServer::start();
    let here = cache(&server.url(), "killed", Duration::from_secs(5)).await;
    let there = cache(&server.url(), "killed", Duration::from_secs(5)).await;
    let loads = Arc::new(AtomicU32::new(0));

    let leader = {
        let (here, loads) = (here.clone(), loads.clone());
        tokio::spawn(async move { value(&here, 2, Duration::from_millis(400), &loads).await })
    };
    assert!(eventually(Duration::from_secs(2), || async { here.stats().loads == 1 }).await);
    let waiter = {
        let (there, loads) = (there.clone(), loads.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            (
                value(&there, 2, Duration::ZERO, &loads).await,
                started.elapsed(),
            )
        })
    };
    assert!(
        eventually(Duration::from_secs(2), || async {
            there.stats().lock_waits == 1
        })
        .await
    );

    server.kill();
    let (waited_value, waited) = waiter.await.unwrap();
    assert_eq!(
        waited_value.unwrap(),
        "value-2",
        "the waiter loads for itself"
    );
    assert!(
        waited < Duration::from_millis(2500),
        "the waiter did not hang until its 5 s lease: {waited:?}"
    );
    assert_eq!(
        leader.await.unwrap().unwrap(),
        "value-2",
        "the leader keeps its value"
    );
    println!("killed redis: the waiter answered after {waited:?}");

    server.restart();
    let back = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || async {
            let hits = here.stats().hits + there.stats().hits;
            value(&here, 2, Duration::ZERO, &loads).await.unwrap();
            value(&there, 2, Duration::ZERO, &loads).await.unwrap();
            here.stats().hits + there.stats().hits > hits
        })
        .await
    );
    let resumed = back.elapsed();
    println!("killed redis: hits resumed {resumed:?} after the restart");
    // Bounded by the configuration: a failed first probe (a stale reconnect), a second
    // cooldown, the reconnect's backoff and a miss plus store, with room for a busy machine.
    assert!(
        resumed < Duration::from_secs(3),
        "hits resume within a few cooldowns: {resumed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_lease_holder_is_taken_over_within_lock_ttl_by_exactly_one_loader() {
    let server = RedisServer::start();
    let lock_ttl = Duration::from_millis(800);
    let mut holder = tokio::process::Command::new(env!("CARGO_BIN_EXE_cached-redis-child"))
        // One task whose loader takes ten minutes, under an 800 ms lease it keeps renewing.
        .args([
            &server.url(),
            "sigkill",
            "5",
            "1",
            "600000",
            &lock_ttl.as_millis().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));
    holder
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"go\n")
        .await
        .unwrap();

    let observer = cache(&server.url(), "sigkill", lock_ttl).await;
    let lease = format!("{}:lease", observer.redis_key(&Key::raw("shared:5")));
    let mut conn = server.conn().await;
    assert!(
        eventually(Duration::from_secs(3), || {
            let (mut conn, lease) = (conn.clone(), lease.clone());
            async move { get_raw(&mut conn, &lease).await.is_some() }
        })
        .await,
        "the child holds the lease"
    );
    // The lease outlives lock_ttl while its holder renews it.
    tokio::time::sleep(lock_ttl + Duration::from_millis(200)).await;
    assert!(
        get_raw(&mut conn, &lease).await.is_some(),
        "renewed while loading"
    );

    let loads = Arc::new(AtomicU32::new(0));
    let mut caches = Vec::new();
    for _ in 0..3 {
        caches.push(cache(&server.url(), "sigkill", lock_ttl).await);
    }
    let waiters: Vec<_> = caches
        .iter()
        .map(|waiter| {
            let (waiter, loads) = (waiter.clone(), loads.clone());
            tokio::spawn(async move {
                let key = Key::raw("shared:5");
                let policy = cached_redis::Policy::new("shared", Duration::from_secs(60)).unwrap();
                let loads = loads.clone();
                let started = Instant::now();
                let got: Result<String, String> = waiter
                    .fetch(&key, &policy, async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        Ok("value-5".to_owned())
                    })
                    .await;
                (got, started.elapsed(), waiter.stats().lock_waits)
            })
        })
        .collect();
    let all_waiting = eventually(Duration::from_secs(5), || async {
        caches.iter().all(|c| c.stats().lock_waits == 1)
    })
    .await;
    assert!(all_waiting, "the three waiters wait on the holder's lease");
    let killed_at = Instant::now();
    holder.start_kill().unwrap(); // SIGKILL: no release, no goodbye
    holder.wait().await.unwrap();
    let mut slowest = Duration::ZERO;
    for waiter in waiters {
        let (got, _, lock_waits) = waiter.await.unwrap();
        assert_eq!(got.as_deref(), Ok("value-5"));
        assert_eq!(lock_waits, 1, "it waited on the dead holder's lease");
        slowest = slowest.max(killed_at.elapsed());
    }
    println!(
        "sigkilled holder: waiters in other processes answered {slowest:?} after the kill (lock_ttl {lock_ttl:?})"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1, "exactly one waiter loaded");
    assert!(
        slowest < 2 * lock_ttl + Duration::from_secs(1),
        "{slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_slower_than_lock_ttl_keeps_its_lease_and_runs_alone() {
    let server = RedisServer::start();
    let lock_ttl = Duration::from_millis(1000);
    let (a, b) = (
        cache(&server.url(), "slow", lock_ttl).await,
        cache(&server.url(), "slow", lock_ttl).await,
    );
    let loads = Arc::new(AtomicU32::new(0));
    let slow = {
        let (a, loads) = (a.clone(), loads.clone());
        tokio::spawn(async move { value(&a, 3, Duration::from_millis(2500), &loads).await })
    };
    assert!(eventually(Duration::from_secs(2), || async { a.stats().loads == 1 }).await);
    let started = Instant::now();
    assert_eq!(
        value(&b, 3, Duration::ZERO, &loads).await.unwrap(),
        "value-3"
    );
    assert_eq!(slow.await.unwrap().unwrap(), "value-3");
    println!(
        "slow loader: 2.5 s load under a 1 s lease (max_load 3 s); the other process waited {:?}",
        started.elapsed()
    );
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "the lease was renewed: one load"
    );
    assert_eq!(b.stats().loads, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_cancelled_callers_leaves_nothing_behind() {
    let server = RedisServer::start();
    // This tests cancellation, not outages: a generous op_timeout keeps a busy machine's slow
    // replies from opening the breaker (which would leave leases to expire on their own).
    let storm_cache = || async { server.cache_builder("storm").build().await.unwrap() };
    let caches = [storm_cache().await, storm_cache().await];
    let loads = Arc::new(AtomicU32::new(0));
    // Seeded, so a failure reproduces.
    let mut rng = cached_redis_tests::Rng::seeded(0x9e37_79b9_7f4a_7c15);
    let mut next = move |bound: u64| rng.below(bound);
    let mut tasks = Vec::new();
    for round in 0..400u64 {
        let cache = caches[(round % 2) as usize].clone();
        let id = next(12) as u32;
        let loader = Duration::from_millis(next(40));
        let give_up = Duration::from_millis(next(60));
        let loads = loads.clone();
        tasks.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(give_up, value(&cache, id, loader, &loads)).await;
        }));
        if round % 50 == 0 {
            let _ = caches[0]
                .invalidate(&Key::builder().text("fault:").part(&id).build())
                .await;
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    for cache in &caches {
        cached_redis_tests::assert_no_state_left(cache).await;
    }
    let conn = server.conn().await;
    assert!(
        eventually(Duration::from_secs(2), || {
            let mut conn = conn.clone();
            async move {
                cached_redis_tests::scan_keys(&mut conn, "storm:*:lease")
                    .await
                    .is_empty()
            }
        })
        .await,
        "leases left behind"
    );
    // Every key still answers promptly and correctly.
    let started = Instant::now();
    for id in 0..12 {
        assert_eq!(
            value(&caches[0], id, Duration::ZERO, &loads).await.unwrap(),
            format!("value-{id}")
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    println!(
        "cancellation storm: 400 callers, {} loads, nothing left behind",
        loads.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_typed_and_enormous_values_are_handled() {
    let server = RedisServer::start();
    let cache = cache(&server.url(), "odd", Duration::from_secs(5)).await;
    let mut conn = server.conn().await;
    let loads = AtomicU32::new(0);

    let key = cache.redis_key(&Key::raw("fault:7"));
    let _: () = redis::cmd("LPUSH")
        .arg(&key)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        value(&cache, 7, Duration::ZERO, &loads).await.unwrap(),
        "value-7"
    );
    cache.settle().await;
    let kind: String = redis::cmd("TYPE")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "string", "the write-back replaced the list");
    assert_eq!(
        value(&cache, 7, Duration::ZERO, &loads).await.unwrap(),
        "value-7"
    );
    assert_eq!(cache.stats().hits, 1);

    // 50 MB of JSON under the key: decoding it as a String fails; it is a miss, never a panic.
    let key = cache.redis_key(&Key::raw("fault:8"));
    let huge = format!("{{\"v\":[{}0]}}", "0,".repeat(25_000_000));
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&huge)
        .query_async(&mut conn)
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        value(&cache, 8, Duration::ZERO, &loads).await.unwrap(),
        "value-8"
    );
    println!(
        "50 MB undecodable value: answered in {:?}",
        started.elapsed()
    );
}

/// Item 10 of the hardening issue: a loader that hangs keeps its key's lease at most
/// `max_load`. Then callers here (joined to it) and in another process load for themselves;
/// the hung caller is not cancelled and gets its own result, which is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_loader_stalls_its_key_at_most_max_load() {
    let server = RedisServer::start();
    let max_load = Duration::from_millis(1500);
    let build = || async {
        Cache::builder(&server.url())
            .namespace("hung")
            .op_timeout(Duration::from_secs(2))
            .lock_ttl(Duration::from_millis(400))
            .max_load(max_load)
            .build()
            .await
            .unwrap()
    };
    let (here, there) = (build().await, build().await);
    let key = Key::raw("hung:1");
    let policy = cached_redis::Policy::new("hung", Duration::from_secs(60)).unwrap();
    let unstick = Arc::new(tokio::sync::Notify::new());
    let hung = {
        let (here, key, unstick) = (here.clone(), key.clone(), unstick.clone());
        tokio::spawn(async move {
            let loader = async move {
                unstick.notified().await;
                Ok::<_, String>("from the hung query".to_owned())
            };
            here.fetch(&key, &policy, loader).await
        })
    };
    assert!(eventually(Duration::from_secs(5), || async { here.stats().loads == 1 }).await);
    let started = Instant::now();
    let read = |cache: &Cache| {
        let (cache, key) = (cache.clone(), key.clone());
        tokio::spawn(async move {
            let got = cache
                .fetch(&key, &policy, async { Ok::<_, String>("fresh".to_owned()) })
                .await;
            (got, started.elapsed())
        })
    };
    let (joined, elsewhere) = (read(&here), read(&there));
    for reader in [joined, elsewhere] {
        let waited = tokio::time::timeout(max_load + Duration::from_secs(5), reader).await;
        let (got, after) = waited
            .expect("a caller waited on the hung load for good")
            .unwrap();
        assert_eq!(got.as_deref(), Ok("fresh"));
        println!("hung loader: another caller answered after {after:?} (max_load {max_load:?})");
        assert!(
            after < max_load + Duration::from_secs(2),
            "waiters load for themselves past max_load: {after:?}"
        );
    }
    assert!(!hung.is_finished(), "the hung caller is not cancelled");
    unstick.notify_one();
    assert_eq!(
        hung.await.unwrap().as_deref(),
        Ok("from the hung query"),
        "it gets its own result"
    );
    let again = there
        .fetch(&key, &policy, async {
            Ok::<_, String>("reloaded".to_owned())
        })
        .await;
    assert_eq!(
        again.as_deref(),
        Ok("fresh"),
        "the late result of the hung load was not stored"
    );
}
