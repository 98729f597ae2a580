//! Guarantee 5: with Redis refusing connections, black-holed, or killed and restarted, every
//! call returns the loader's result within `op_timeout` plus the loader; no error of the
//! cache's own surfaces; once Redis is back, hits resume without a restart.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, redis_cached};
use cached_redis_tests::{RedisServer, RefusingPort, eventually, in_the_near_pass};

static LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "profile:<id>", ttl = "60s", cache = cache)]
async fn profile(cache: &Cache, id: u32) -> Result<String, std::io::Error> {
    LOADS.fetch_add(1, Ordering::SeqCst);
    Ok(format!("profile-{id}"))
}

async fn cache_for(url: &str, namespace: &str) -> Cache {
    cache_cooling(url, namespace, Duration::from_millis(300)).await
}

async fn cache_cooling(url: &str, namespace: &str, cooldown: Duration) -> Cache {
    let builder = Cache::builder(url)
        .namespace(namespace)
        .op_timeout(Duration::from_millis(100))
        .breaker_threshold(3)
        .breaker_cooldown(cooldown);
    in_the_near_pass(builder)
        .build()
        .await
        .expect("building never needs Redis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_falls_back_to_the_loader_and_opens_the_breaker() {
    // A long cooldown: no probe may slip in while the test checks that the breaker is open.
    let refusing = RefusingPort::new();
    let url = refusing.url();
    let cache = cache_cooling(&url, "refused", Duration::from_secs(60)).await;
    let mut slowest = Duration::ZERO;
    for id in 0..10 {
        let started = Instant::now();
        assert_eq!(profile(&cache, id).await.unwrap(), format!("profile-{id}"));
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(750),
        "bounded by op_timeout: {slowest:?}"
    );
    let stats = cache.stats();
    assert_eq!(
        (stats.fallbacks, stats.loads, stats.hits),
        (10, 10, 0),
        "{stats:?}"
    );
    assert!(stats.redis_errors >= 3, "{stats:?}");
    let errors_before = stats.redis_errors;
    for id in 0..5 {
        profile(&cache, id).await.unwrap();
    }
    assert_eq!(
        cache.stats().redis_errors,
        errors_before,
        "the open breaker stops calling Redis"
    );
    assert!(
        cache
            .invalidate(&cached_redis::Key::raw("profile:1"))
            .await
            .is_err(),
        "writers learn of the outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_redis_costs_at_most_op_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("redis://127.0.0.1:{port}");
    let cache = cache_cooling(&url, "hole", Duration::from_secs(60)).await;
    let mut latencies = Vec::new();
    let mut asked_redis = Vec::new();
    for id in 0..8 {
        let errors = cache.stats().redis_errors;
        let started = Instant::now();
        assert_eq!(profile(&cache, id).await.unwrap(), format!("profile-{id}"));
        latencies.push(started.elapsed());
        asked_redis.push(cache.stats().redis_errors > errors);
    }
    let slowest = latencies.iter().max().unwrap();
    println!(
        "black-holed redis: per-call latency {latencies:?} (op_timeout 100 ms, breaker after 3 failures)"
    );
    assert!(
        *slowest < Duration::from_millis(750),
        "each call bounded by op_timeout, not by the black hole: {latencies:?}"
    );
    assert!(
        !asked_redis.last().unwrap(),
        "breaker open: the last call paid no timeout: {asked_redis:?} {latencies:?}"
    );
    hole.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_run() {
    let mut server = RedisServer::start();
    let cache = cache_for(&server.url(), "restart").await;
    assert_eq!(profile(&cache, 1).await.unwrap(), "profile-1");
    assert_eq!(profile(&cache, 1).await.unwrap(), "profile-1");
    assert_eq!(cache.stats().hits, 1);

    server.kill();
    for _ in 0..10 {
        assert_eq!(
            profile(&cache, 1).await.unwrap(),
            "profile-1",
            "the loader answers"
        );
    }
    assert!(cache.stats().fallbacks >= 10);

    server.restart();
    let back = Instant::now();
    let resumed = eventually(Duration::from_secs(3), || async {
        let hits = cache.stats().hits;
        profile(&cache, 1).await.unwrap();
        cache.stats().hits > hits
    })
    .await;
    assert!(resumed, "hits resume once Redis is back");
    assert!(
        back.elapsed() < Duration::from_secs(3),
        "resumed within a few cooldowns, after {:?}",
        back.elapsed()
    );
}

/// Polls `future` once and drops it; whether it was still pending.
async fn poll_once<F: std::future::Future>(future: F) -> bool {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx).is_pending())).await
}

/// Item 1 of the hardening issue: the breaker's probe is an ordinary Redis call, and the caller
/// making it may be cancelled at its await (a readiness check's deadline, a `select!`, a
/// renewal dropped when its load ends). The breaker must still let the next call probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_probe_does_not_keep_the_breaker_open() {
    let server = RedisServer::start();
    let cooldown = Duration::from_millis(200);
    let cache = Cache::builder(&server.url())
        .namespace("probe")
        .op_timeout(Duration::from_millis(100))
        .breaker_threshold(1)
        .breaker_cooldown(cooldown)
        .build()
        .await
        .unwrap();
    assert!(cache.ping().await.is_ok());
    let mut admin = server.conn().await;
    for cancel_at in ["ping", "fetch"] {
        // Until a probe is caught mid-call (one that completes at once, on a connection that
        // failed meanwhile, settles the breaker, so start over).
        let mut caught = false;
        for _ in 0..5 {
            // Redis stops answering for a while: one timeout opens the breaker.
            let pause = Duration::from_millis(250);
            let _: () = redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(pause.as_millis() as u64)
                .arg("ALL")
                .query_async(&mut admin)
                .await
                .unwrap();
            assert!(cache.ping().await.is_err(), "the breaker opens");
            // Once Redis answers again and the cooldown is over, the first call is the probe.
            // Cancel it at its only await, the Redis call, after it was admitted and sent.
            tokio::time::sleep(pause + cooldown).await;
            let probe = async {
                match cancel_at {
                    "ping" => drop(cache.ping().await),
                    _ => drop(profile(&cache, 7).await),
                }
            };
            if poll_once(probe).await {
                caught = true;
                break;
            }
            assert!(
                eventually(Duration::from_secs(3), || async {
                    cache.ping().await.is_ok()
                })
                .await
            );
        }
        assert!(caught, "a probe was cancelled mid-call");
        let back = Instant::now();
        let resumed = eventually(Duration::from_secs(3), || async {
            cache.ping().await.is_ok()
        })
        .await;
        assert!(
            resumed,
            "after a probe cancelled in {cancel_at}, the breaker never closed"
        );
        assert!(
            back.elapsed() < cooldown * 3,
            "caching resumed {:?} after the cancelled probe",
            back.elapsed()
        );
    }
}
