//! Observability: one `tracing` span per cached call carrying the key, the outcome (hit, miss,
//! waited, fallback, writes-refused, stale-refused) and the time not spent in the loader; and,
//! with the `metrics` feature, counters (calls by outcome, events, Redis errors by operation)
//! and a load-time histogram labelled by function. A call's outcome and its counted events
//! agree.

use std::time::Duration;

use cached_redis::{Cache, redis_cached};
use cached_redis_tests::{RedisServer, RefusingPort, eventually};
use tokio::sync::Notify;

static GATE: Notify = Notify::const_new();

#[redis_cached(key = "obs:<id>", ttl = "60s", cache = cache, skip = "wait")]
async fn observed(cache: &Cache, id: u32, wait: bool) -> Result<u32, String> {
    if wait {
        GATE.notified().await;
    }
    if id == 13 {
        return Err("unlucky".into());
    }
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_carry_the_outcome_and_metrics_move() {
    let logs = cached_redis_tests::capture_logs(tracing::Level::DEBUG);
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();

    let server = RedisServer::start();
    let cache = server.cache("obs").await;
    observed(&cache, 1, false).await.unwrap(); // miss
    observed(&cache, 1, false).await.unwrap(); // hit
    assert!(observed(&cache, 13, false).await.is_err()); // a load error
    // A waiter: a second caller joins a load held at the gate.
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move { observed(&cache, 2, true).await })
    };
    let leading = eventually(Duration::from_secs(10), || async {
        cache.stats().loads == 3
    });
    assert!(leading.await, "the leader's load started");
    let joiner = {
        let cache = cache.clone();
        tokio::spawn(async move { observed(&cache, 2, false).await })
    };
    let joined = eventually(Duration::from_secs(10), || async {
        cache.stats().coalesced == 1
    });
    assert!(joined.await, "the second caller joined the load");
    GATE.notify_one();
    leader.await.unwrap().unwrap();
    joiner.await.unwrap().unwrap();
    // A fallback: Redis refuses connections.
    let refusing = RefusingPort::new();
    let down = Cache::builder(&refusing.url())
        .namespace("obs")
        .build()
        .await
        .unwrap();
    observed(&down, 3, false).await.unwrap();
    // More failures within 5 s: counted, but not warned about again.
    for _ in 0..4 {
        let _ = down.invalidate(&cached_redis::Key::raw("obs:3")).await;
    }
    assert_eq!(down.stats().redis_errors, 5);
    let text = logs.text();
    let warnings = text.lines().filter(|l| l.contains("redis trouble")).count();
    assert_eq!(
        warnings, 1,
        "Redis trouble is warned about at most once every 5 s:\n{text}"
    );
    // Redis answers the GET but not the lease (its `SET NX`, nor the lease script, which
    // cannot `SET` either): the call falls back, and is counted so.
    let no_scripts = RedisServer::start_with(&["--rename-command", "SET", "\"\""]);
    let scriptless = no_scripts.cache("obs").await;
    observed(&scriptless, 4, false).await.unwrap();
    let seen = scriptless.stats();
    assert_eq!(
        (seen.misses, seen.fallbacks, seen.loads),
        (1, 1, 1),
        "{seen:?}"
    );
    // Redis answers reads but refuses writes.
    let full = RedisServer::start_with(&["--maxmemory", "1", "--maxmemory-policy", "noeviction"]);
    observed(&full.cache("obs").await, 5, false).await.unwrap();
    // A stored value that does not decode.
    let mut conn = server.conn().await;
    let _: () = redis::cmd("SET")
        .arg("obs:{obs:6}")
        .arg("not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    observed(&cache, 6, false).await.unwrap();

    let text = logs.text();
    for outcome in ["hit", "miss", "waited", "fallback", "writes-refused"] {
        let needle = format!("outcome=\"{outcome}\"");
        assert!(
            text.lines()
                .any(|l| l.contains("cached{") && l.contains(&needle) && l.contains("redis_us=")),
            "no span closed with {needle}:\n{text}"
        );
    }
    assert!(text.contains("key=\"obs:{obs:1}\""), "{text}");

    let rendered = prometheus.render();
    for metric in [
        "cached_redis_hits_total{function=\"observed\"} 1",
        "cached_redis_misses_total{function=\"observed\"} 7",
        "cached_redis_loads_total{function=\"observed\"} 7",
        "cached_redis_load_errors_total{function=\"observed\"} 1",
        "cached_redis_coalesced_total{function=\"observed\"} 1",
        "cached_redis_fallbacks_total{function=\"observed\"} 2",
        "cached_redis_writes_refused_total{function=\"observed\"} 1",
        "cached_redis_decode_errors_total{function=\"observed\"} 1",
        "cached_redis_load_duration_seconds_count{function=\"observed\"} 7",
        "cached_redis_calls_total{function=\"observed\",outcome=\"hit\"} 1",
        "cached_redis_calls_total{function=\"observed\",outcome=\"miss\"} 4",
        "cached_redis_calls_total{function=\"observed\",outcome=\"waited\"} 1",
        "cached_redis_calls_total{function=\"observed\",outcome=\"fallback\"} 2",
        "cached_redis_calls_total{function=\"observed\",outcome=\"writes-refused\"} 1",
        "cached_redis_redis_errors_total{operation=\"GET\"} 1",
        "cached_redis_redis_errors_total{operation=\"invalidate\"} 4",
        // The four refused invalidations of one key: one kept, until Redis takes it.
        "cached_redis_invalidations_pending{namespace=\"obs\"} 1",
    ] {
        assert!(
            rendered.contains(metric),
            "missing `{metric}` in:\n{rendered}"
        );
    }
}
