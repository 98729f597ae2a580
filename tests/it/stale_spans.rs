//! The spans of `stale` calls: `stale` for an entry answered past its TTL, `refreshed` for
//! the call that refreshed it. Alone in its binary: the log capture is the process's global
//! subscriber, which must be in place before any call's span is made.

use cached_redis_tests::RedisServer;
use cached_redis_tests::stale::{held_refresh, loader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_say_stale_and_refreshed() {
    let logs = cached_redis_tests::capture_logs(tracing::Level::DEBUG);
    let server = RedisServer::start();
    let cache = server.cache("stale-spans").await;
    let (key, policy, loads, gate, refreshing) =
        held_refresh(&server, &cache, "spans_observed").await;
    let stale = cache.fetch(&key, &policy, loader(&loads, &gate)).await;
    assert_eq!(stale.as_deref(), Ok("v0"));
    gate.open();
    assert_eq!(refreshing.await.unwrap().as_deref(), Ok("v1"));
    let text = logs.text();
    let spans: Vec<_> = text
        .lines()
        .filter(|l| l.contains("spans_observed"))
        .collect();
    for outcome in ["stale", "refreshed"] {
        let needle = format!("outcome=\"{outcome}\"");
        assert!(
            spans.iter().any(|l| l.contains(&needle)),
            "{needle} in {spans:#?}"
        );
    }
}
