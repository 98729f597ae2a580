//! A soak: a few seconds (CI) or minutes (`CACHED_REDIS_SOAK_SECS`) of mixed reads,
//! invalidations and cancellations over two caches, with Redis paused and restarted along the
//! way. Memory, in-process maps, subscriptions and tasks must stay flat; figures are printed.
//! In the suite's near pass (`CACHED_REDIS_TEST_NEAR=1`) both caches keep their values near.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, redis_cached};
use cached_redis_tests::{RedisServer, eventually, in_the_near_pass, near_pass};

#[redis_cached(key = "soak:<id>", ttl = "2s", jitter = "50%", cache = cache)]
async fn item(cache: &Cache, id: u32, work: Duration) -> Result<Vec<u8>, String> {
    if !work.is_zero() {
        tokio::time::sleep(work).await;
    }
    if id.is_multiple_of(97) {
        return Err("not found".into());
    }
    Ok(vec![id as u8; 512])
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_maps_subscriptions_and_tasks_stay_flat() {
    let secs: u64 = std::env::var("CACHED_REDIS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let mut server = RedisServer::start();
    let build = || async {
        let builder = Cache::builder(&server.url())
            .namespace("soak")
            .op_timeout(Duration::from_millis(50))
            .lock_ttl(Duration::from_millis(500))
            .breaker_threshold(3)
            .breaker_cooldown(Duration::from_millis(100));
        in_the_near_pass(builder).build().await.unwrap()
    };
    let caches = [build().await, build().await];
    // Warm up: both caches connect, and each waits once on the other's lease (which connects
    // its wake-up subscriber), so the baseline counts their connection tasks.
    // Each leader's load is held until the other cache waits on its lease.
    for (a, b) in [(0, 1), (1, 0)] {
        let key = Key::raw(format!("warm:{a}"));
        let policy = cached_redis::Policy::new("warm", Duration::from_secs(60)).unwrap();
        let release = Arc::new(tokio::sync::Notify::new());
        let leader = {
            let (cache, key, release) = (caches[a].clone(), key.clone(), release.clone());
            tokio::spawn(async move {
                let loader = async move {
                    release.notified().await;
                    Ok::<_, String>(1u8)
                };
                cache.fetch(&key, &policy, loader).await
            })
        };
        assert!(
            eventually(Duration::from_secs(5), || async {
                caches[a].stats().loads > 0
            })
            .await
        );
        let waiter = {
            let (cache, key) = (caches[b].clone(), key.clone());
            tokio::spawn(async move {
                cache
                    .fetch(&key, &policy, async { Ok::<_, String>(2u8) })
                    .await
            })
        };
        assert!(
            eventually(Duration::from_secs(5), || async {
                caches[b].stats().lock_waits > 0
            })
            .await,
            "the other cache waits on the lease"
        );
        release.notify_one();
        assert_eq!(leader.await.unwrap(), Ok(1));
        assert_eq!(waiter.await.unwrap(), Ok(1));
    }
    let runtime = tokio::runtime::Handle::current();
    assert!(
        eventually(Duration::from_secs(2), || async {
            cached_redis::__private::in_flight(&caches[0]) == (0, 0)
        })
        .await
    );
    let baseline_tasks = runtime.metrics().num_alive_tasks();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..32u64)
        .map(|w| {
            let (cache, stop, calls) = (
                caches[(w % 2) as usize].clone(),
                stop.clone(),
                calls.clone(),
            );
            tokio::spawn(async move {
                let mut rng = cached_redis_tests::Rng::seeded(0x2545_f491_4f6c_dd1d ^ (w + 1));
                let mut next = move |n: u64| rng.below(n);
                while !stop.load(Ordering::Relaxed) {
                    let id = next(400) as u32;
                    match next(20) {
                        0 => {
                            let _ = cache
                                .invalidate(&Key::builder().text("soak:").part(&id).build())
                                .await;
                        }
                        1 => {
                            let _ = tokio::time::timeout(
                                Duration::from_millis(next(5)),
                                item(&cache, id, Duration::from_millis(next(20))),
                            )
                            .await;
                        }
                        _ => {
                            let _ = item(&cache, id, Duration::from_millis(next(3))).await;
                        }
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut faults = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tick = samples.len();
        if tick % 6 == 3 {
            server.kill();
            server.restart();
            faults += 1;
        } else if tick % 6 == 5 {
            let mut admin = server.conn().await;
            let _: redis::RedisResult<()> = redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(150)
                .arg("ALL")
                .query_async(&mut admin)
                .await;
            faults += 1;
        }
        samples.push((
            started.elapsed(),
            rss_kib(),
            cached_redis::__private::in_flight(&caches[0]),
            runtime.metrics().num_alive_tasks(),
        ));
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    for cache in &caches {
        cached_redis_tests::assert_no_state_left(cache).await;
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            runtime.metrics().num_alive_tasks() <= baseline_tasks
        })
        .await,
        "tasks left running: {} (baseline {baseline_tasks})",
        runtime.metrics().num_alive_tasks()
    );

    println!(
        "soak: {secs} s, {} calls, {faults} faults (restarts and pauses)",
        calls.load(Ordering::Relaxed)
    );
    println!("soak:  time     rss KiB   flights/channels  tasks");
    for (at, rss, in_flight, tasks) in &samples {
        println!(
            "soak: {:>5.1}s  {rss:>9}   {in_flight:?}  {tasks:>14}",
            at.as_secs_f64()
        );
    }
    let warm = samples[samples.len() / 4].1;
    let last = samples.last().unwrap().1;
    println!("soak: rss after warm-up {warm} KiB, at the end {last} KiB");
    assert!(
        last < warm + 16 * 1024,
        "memory grew from {warm} KiB to {last} KiB"
    );
    let stats = caches[0].stats();
    assert!(
        stats.hits > 0 && stats.fallbacks > 0,
        "both paths exercised: {stats:?}"
    );
    if near_pass() {
        println!(
            "soak: near hits {}, flushes {}, rejected {}",
            stats.near_hits, stats.near_flushes, stats.near_rejected
        );
        assert!(stats.near_hits > 0, "near copies served: {stats:?}");
    }
}
