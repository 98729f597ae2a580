//! The spans of `stale` calls: `stale` for an entry answered past its TTL, `refreshed` for
//! the call that refreshed it. Alone in its binary: the log capture is the process's global
//! subscriber, which must be in place before any call's span is made.

use std::time::Duration;

use cached_redis_tests::stale::{held_refresh, loader};
use cached_redis_tests::{RedisServer, eventually};

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
    // A call's span closes when the last of its work does: the refresh's write-back, which
    // runs after its caller is answered, carries it.
    cache.settle().await;
    let spans = || {
        let text = logs.text();
        let lines = text.lines().filter(|l| l.contains("spans_observed"));
        lines.map(str::to_owned).collect::<Vec<_>>()
    };
    for outcome in ["stale", "refreshed"] {
        let needle = format!("outcome=\"{outcome}\"");
        let closed = eventually(Duration::from_secs(10), || async {
            spans().iter().any(|l| l.contains(&needle))
        });
        assert!(closed.await, "{needle} in {:#?}", spans());
    }
}
