//! Adversarial tests, second round, of the newest fixes: the flights' clock and revocation
//! (`read/flight.rs`), shared errors (`read/lead.rs` `give_up`), and invalidations that survive
//! an outage (`write/pending.rs`, `write/replay.rs`, `read/fetch.rs`). Each test is named for the
//! guarantee it attacks. Redis is real and refuses writes while serving reads
//! (`min-replicas-to-write`); windows are widened with gates and a proxy that holds one
//! connection's replies, never with a sleep standing in for an event.
//!
//! Findings (failed against the commit they were written on; both fixed since), explained at
//! each test:
//! - `after_a_refused_invalidation_no_call_here_takes_a_value_another_leader_read_from_redis`
//! - `a_refused_http_invalidation_is_kept_whole_and_no_request_here_is_answered_from_the_old_entry`
//!
//! The others are attacks that held.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::routing::get;
use cached_redis::http::CacheLayer;
use cached_redis::{Cache, Key, Policy};
use cached_redis_tests::{Gate, Proxy, RedisServer, command_calls, config_set, eventually};
use http_body_util::BodyExt as _;
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

fn policy() -> Policy {
    Policy::new("adv-two", Duration::from_secs(60)).unwrap()
}

/// A read through the cache whose loader reads `row`, the database.
fn read(cache: &Cache, row: &Arc<AtomicU64>, key: &Key) -> JoinHandle<Result<u64, String>> {
    let (cache, row, key) = (cache.clone(), row.clone(), key.clone());
    tokio::spawn(async move {
        let load = async move { Ok::<u64, String>(row.load(Ordering::SeqCst)) };
        cache.fetch(&key, &policy(), load).await
    })
}

/// A read whose loader reads `row`, opens `read_row`, and returns only once `release` opens.
fn held_read(
    cache: &Cache,
    row: &Arc<AtomicU64>,
    key: &Key,
    read_row: &Gate,
    release: &Gate,
) -> JoinHandle<Result<u64, String>> {
    let (cache, row, key) = (cache.clone(), row.clone(), key.clone());
    let (read_row, release) = (read_row.clone(), release.clone());
    tokio::spawn(async move {
        let load = async move {
            let value = row.load(Ordering::SeqCst);
            read_row.open();
            release.passed().await;
            Ok::<u64, String>(value)
        };
        cache.fetch(&key, &policy(), load).await
    })
}

/// Waits (bounded) until `check` holds on `cache`'s stats, or fails with them.
async fn until(cache: &Cache, what: &str, check: impl Fn(&cached_redis::Stats) -> bool) {
    let ok = eventually(Duration::from_secs(5), || async { check(&cache.stats()) }).await;
    assert!(ok, "{what}: {:?}", cache.stats());
}

/// FINDING (fixed: a leader whose key is covered takes no lease and reads nothing from Redis,
/// `read/fetch.rs` `miss`). Guarantee 2's "invalidations that survive an outage": after `invalidate` returned
/// `Err`, "this process does not read the entries it covers from Redis, so it sees its own
/// write". A call that begins after the `Err` skips Redis (`pending.covers`) and goes to
/// `join_or_lead`, where it joins a flight in progress if there is one. `keep_failed` revokes
/// the flights in the map at that moment, but a caller whose GET was sent before the
/// invalidation (and answered "absent" after it, here held by a proxy) leads a new flight
/// afterwards, on the leased path: its lease script reads Redis, which never took the
/// invalidation. Another process holds the lease (its load read the old row), so the leader
/// waits; the call that began after the `Err` joins it, and when the other process's
/// write-back lands (Redis takes writes again before the replay, which backs off), the leader's
/// lease script finds the old value, ticking the flights' clock only then: the joiner's call
/// began before that tick, so `flight::wait` hands it the value read from Redis. The writer's
/// own process returns the value from before its write, after its invalidation returned.
/// Nothing on the leased path (`lease_or_value`) or in `wait` checks `pending.covers`, and a
/// joiner that skipped Redis (`redis_ok == false`) is held to the same rule as one that read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_refused_invalidation_no_call_here_takes_a_value_another_leader_read_from_redis() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let proxy = Proxy::start(server.port()).await;
    let builder = Cache::builder(&proxy.url())
        .namespace("adv-two-lease")
        .op_timeout(Duration::from_secs(5));
    let (a, _writes) = proxy.cache_and_writes(&mut admin, builder).await;
    let reads = proxy
        .connection_of_client(&mut admin, |f| f.contains(&"cmd=get"))
        .await
        .expect("the reads connection");
    // Another process on the same Redis.
    let b = server.cache("adv-two-lease").await;
    let key = Key::raw("stock:1");
    let row = Arc::new(AtomicU64::new(1));

    // The other process takes the lease of the cold key and reads the row (1).
    let (b_read, b_release) = (Gate::new(), Gate::new());
    let b_load = held_read(&b, &row, &key, &b_read, &b_release);
    b_read.passed().await;

    // Here, a call's GET reaches Redis (absent) before the write; its answer is held.
    let gets = command_calls(&mut admin, "get").await;
    proxy.hold_replies(reads);
    let early = read(&a, &row, &key);
    assert!(
        eventually(Duration::from_secs(5), || async {
            command_calls(&mut admin.clone(), "get").await > gets
        })
        .await
    );

    // The write; Redis refuses the invalidation, which is kept.
    config_set(&mut admin, "min-replicas-to-write", "1").await;
    row.store(2, Ordering::SeqCst);
    let said = a.invalidate(&key).await;
    assert!(said.is_err(), "{said:?}");
    assert_eq!(a.stats().invalidations_pending, 1);
    let errors = a.stats().redis_errors;
    // Four replays refused (50, 150, 350, 750 ms after the refusal): the next is 800 ms away.
    until(&a, "four replays refused", |s| s.redis_errors >= errors + 4).await;
    let window = Instant::now();
    config_set(&mut admin, "min-replicas-to-write", "0").await;

    // The early call's GET answers "absent": it leads. Before the fix it took the lease path
    // and waited for the other process's lease, and the call below joined it; now a leader
    // whose key is covered takes no lease and reads nothing from Redis.
    proxy.release_replies(reads);
    let early_settled = eventually(Duration::from_secs(5), || async {
        a.stats().lock_waits >= 1 || early.is_finished()
    })
    .await;
    assert!(
        early_settled,
        "the early call waits for the lease or is answered"
    );

    // A call that begins after the invalidation returned `Err`. It skips Redis.
    let after = read(&a, &row, &key);

    // The other process's load returns and is written back under its intact lease.
    b_release.open();
    assert_eq!(b_load.await.unwrap(), Ok(1));
    let early = early.await.unwrap();
    assert!(
        matches!(early, Ok(1 | 2)),
        "began before the write: may be old: {early:?}"
    );
    let later = after.await.unwrap();
    let (pending, elapsed) = (a.stats().invalidations_pending, window.elapsed());
    assert_eq!(
        pending, 1,
        "the replay came first ({elapsed:?}): the race was not reproduced"
    );
    assert_eq!(
        later,
        Ok(2),
        "a call that began after this process's invalidation returned Err got the value from \
         before its write, read from Redis by another leader's lease script (stats: {:?})",
        a.stats()
    );
}

/// The price handler: answers the row.
async fn price(State(row): State<Arc<AtomicU64>>) -> String {
    format!("price {}", row.load(Ordering::SeqCst))
}

/// One request, as a browser sends it (with a `Host`): `X-Cache` and the body.
async fn get_with_host(app: &Router, host: &str) -> (Option<String>, String) {
    let request = Request::get("/price")
        .header("host", host)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let x_cache = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (x_cache, String::from_utf8_lossy(&body).into_owned())
}

/// FINDING (fixed: every removal is sent, each refused one kept). `CacheLayer::invalidate(cache,
/// "GET", path)` is four removals: the `GET` base key,
/// the `GET` variants (`<base>|...`: every request carrying a `Host` is one, `|host=...`, as
/// is every `Vary` and per-user response), then the same for `HEAD`. It runs them with `?`:
/// when Redis refuses the first (`Cache::invalidate` of the bare base key, which a request
/// with a `Host` header never uses), it returns `Err` at once, and the three others are
/// neither sent nor kept. Only the base key is pending. The writer's own process then answers
/// the next request (a `HIT`) from the old entry right after the `Err`, against "until then
/// this process does not read the entries it covers from Redis, so it sees its own write";
/// and since the variants were never kept, nothing replays them: once Redis takes writes
/// again and the replay has run (`invalidations_pending` 0), every process keeps serving the
/// old response until its TTL. (`CacheLayer::invalidate_prefix` has the same shape: a
/// refused `GET` removal is kept, and the `HEAD` one is never sent or kept.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_http_invalidation_is_kept_whole_and_no_request_here_is_answered_from_the_old_entry()
 {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let cache = server.cache("adv-two-http").await;
    let row = Arc::new(AtomicU64::new(1));
    let app = Router::new()
        .route("/price", get(price))
        .layer(CacheLayer::new(cache.clone(), Duration::from_secs(30)))
        .with_state(row.clone());
    let host = "shop.example";
    assert_eq!(get_with_host(&app, host).await.1, "price 1");
    cache.settle().await;
    assert_eq!(
        get_with_host(&app, host).await,
        (Some("HIT".into()), "price 1".into())
    );

    config_set(&mut admin, "min-replicas-to-write", "1").await;
    row.store(2, Ordering::SeqCst);
    let said = CacheLayer::invalidate(&cache, "GET", "/price").await;
    assert!(said.is_err(), "{said:?}");
    let pending = cache.stats().invalidations_pending;
    let here = get_with_host(&app, host).await;

    config_set(&mut admin, "min-replicas-to-write", "0").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            cache.stats().invalidations_pending == 0
        })
        .await
    );
    let replayed = get_with_host(&app, host).await;
    assert!(
        here.1 == "price 2" && replayed.1 == "price 2",
        "after CacheLayer::invalidate returned Err ({pending} removal(s) kept), this process \
         answered {here:?}, and after the replay {replayed:?}: the old response"
    );
}

/// HELD. A refused invalidation revokes the load in flight here (it read the old row); a call
/// after it leads a load of its own, another joins that one, and the old leader's late finish
/// neither removes the new flight (a third call still joins it) nor answers it: the two later
/// loads cost one load, and every call after the `Err` gets the new row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_revoked_by_a_refused_invalidation_neither_closes_nor_answers_the_next_one() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let cache = server.cache("adv-two-revoke").await;
    let key = Key::raw("stock:5");
    let row = Arc::new(AtomicU64::new(1));
    let (old_read, old_release) = (Gate::new(), Gate::new());
    let old = held_read(&cache, &row, &key, &old_read, &old_release);
    old_read.passed().await;

    config_set(&mut admin, "min-replicas-to-write", "1").await;
    row.store(2, Ordering::SeqCst);
    assert!(cache.invalidate(&key).await.is_err());

    let (new_read, new_release) = (Gate::new(), Gate::new());
    let new = held_read(&cache, &row, &key, &new_read, &new_release);
    new_read.passed().await;
    let coalesced = cache.stats().coalesced;
    let joined = read(&cache, &row, &key);
    until(&cache, "joined the new load", |s| s.coalesced > coalesced).await;

    // The old load finishes (its write-back is refused); its flight was revoked.
    old_release.open();
    assert_eq!(old.await.unwrap(), Ok(1));
    let loads = cache.stats().loads;
    let third = read(&cache, &row, &key);
    until(&cache, "a third call joined the new load", |s| {
        s.coalesced > coalesced + 1
    })
    .await;
    new_release.open();
    assert_eq!(new.await.unwrap(), Ok(2));
    assert_eq!(joined.await.unwrap(), Ok(2));
    assert_eq!(third.await.unwrap(), Ok(2));
    assert_eq!(cache.stats().loads, loads, "no load after the new one");
    config_set(&mut admin, "min-replicas-to-write", "0").await;
    until(&cache, "replayed", |s| s.invalidations_pending == 0).await;
    cache.settle().await;
    cached_redis_tests::assert_no_state_left(&cache).await;
}
