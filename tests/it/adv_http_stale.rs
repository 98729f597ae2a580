//! Adversarial review of the HTTP layer's stale answers (RFC 5861) on the engine's per-entry
//! windows: `stale-while-revalidate`, `stale-if-error`, `.serve_stale(false)`, the `Vary`
//! record's lifetime, invalidations and writes racing stale loads, and Redis trouble. On a real
//! axum app over real Redis. `found_*` tests showed a broken promise and failed before their
//! fix; `held_*` tests are attacks that held.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use cached_redis::Cache;
use cached_redis::http::CacheLayer;
use cached_redis_tests::{RedisServer, get_raw, pttl, scan_keys};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

/// The origin behind the layer.
struct Origin {
    version: AtomicU32,
    runs: AtomicU32,
    status: AtomicU16,
    cache_control: Mutex<String>,
    /// A `Set-Cookie` on every error answer (a personal error page).
    cookie_on_error: AtomicBool,
    hold: AtomicBool,
    held: tokio::sync::Semaphore,
    entered: tokio::sync::Notify,
}

type Shared = Arc<Origin>;

fn origin(cache_control: &str) -> Shared {
    Arc::new(Origin {
        version: AtomicU32::new(1),
        runs: AtomicU32::new(0),
        status: AtomicU16::new(200),
        cache_control: Mutex::new(cache_control.to_owned()),
        cookie_on_error: AtomicBool::new(false),
        hold: AtomicBool::new(false),
        held: tokio::sync::Semaphore::new(0),
        entered: tokio::sync::Notify::new(),
    })
}

async fn page(
    State(origin): State<Shared>,
    uri: axum::http::Uri,
    method: Method,
    headers: HeaderMap,
) -> Response<Body> {
    if method == Method::POST {
        origin.version.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::NO_CONTENT, "").into_response();
    }
    let run = origin.runs.fetch_add(1, Ordering::SeqCst) + 1;
    let version = origin.version.load(Ordering::SeqCst);
    if origin.hold.swap(false, Ordering::SeqCst) {
        origin.entered.notify_one();
        origin.held.acquire().await.unwrap().forget();
    }
    let status = StatusCode::from_u16(origin.status.load(Ordering::SeqCst)).unwrap();
    let cache_control = origin.cache_control.lock().unwrap().clone();
    let language = headers.get(header::ACCEPT_LANGUAGE).cloned();
    let body = format!(
        "v{version} {:?}",
        language.map(|l| l.to_str().unwrap().to_owned())
    );
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    // Each line of the configured value (separated by `\n`) is a header line `name: value`;
    // a value without a name is a `Cache-Control` line.
    for line in cache_control.split('\n').filter(|l| !l.is_empty()) {
        match line.split_once(": ") {
            Some((name, value)) => h.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            ),
            None => h.append(header::CACHE_CONTROL, line.parse().unwrap()),
        };
    }
    if uri.path() == "/varied" {
        h.insert(header::VARY, "accept-language".parse().unwrap());
    }
    if status.is_server_error() && origin.cookie_on_error.load(Ordering::SeqCst) {
        let cookie = format!("session=personal-to-run-{run}");
        h.insert(header::SET_COOKIE, cookie.parse().unwrap());
    }
    response
}

fn app(layer: CacheLayer, origin: &Shared) -> Router {
    Router::new()
        .route("/page", get(page).post(page))
        .route("/other", get(page))
        .route("/varied", get(page))
        .layer(layer)
        .with_state(origin.clone())
}

const TTL: Duration = Duration::from_millis(300);

fn layer(cache: &Cache) -> CacheLayer {
    CacheLayer::new(cache.clone(), TTL)
}

type Answer = (StatusCode, Option<String>, String);

async fn send(app: &Router, request: Request<Body>) -> (Answer, HeaderMap) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let x_cache = headers
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        (status, x_cache, String::from_utf8_lossy(&body).into_owned()),
        headers,
    )
}

async fn get_path(app: &Router, path: &str) -> Answer {
    let request = Request::get(path).body(Body::empty()).unwrap();
    send(app, request).await.0
}

async fn get_page(app: &Router) -> Answer {
    get_path(app, "/page").await
}

fn answer(status: StatusCode, x_cache: &str, body: &str) -> Answer {
    (status, Some(x_cache.to_owned()), body.to_owned())
}

const V1: &str = "v1 None";
const V2: &str = "v2 None";

/// Stores `path` through `app`, and waits out its freshness.
async fn stored_then_stale_at(app: &Router, cache: &Cache, path: &str) {
    let first = get_path(app, path).await;
    assert_eq!(first.1.as_deref(), Some("MISS"), "{first:?}");
    let second = get_path(app, path).await;
    assert_eq!(second.1.as_deref(), Some("HIT"), "{second:?}");
    cache.settle().await;
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
}

async fn stored_then_stale(app: &Router, cache: &Cache) {
    stored_then_stale_at(app, cache, "/page").await;
}

/// Starts a `GET path` whose handler run is held, and waits until it is.
async fn held_request(
    app: &Router,
    origin: &Shared,
    path: &'static str,
) -> tokio::task::JoinHandle<Answer> {
    origin.hold.store(true, Ordering::SeqCst);
    let entered = origin.entered.notified();
    let app = app.clone();
    let held = tokio::spawn(async move { get_path(&app, path).await });
    entered.await;
    held
}

// ---------------------------------------------------------------------------------------------
// Found (each failed before its fix)
// ---------------------------------------------------------------------------------------------

/// `.serve_stale(false)` "turns it off", and a response is otherwise never served past its
/// freshness. A process configured with `serve_stale(false)` (a rollout that switches stale
/// answers off, or one service of two on the same Redis) reads an entry that a default layer
/// stored with `stale-if-error=60`: its policy does not watch expiry, so the entry, which Redis
/// keeps a minute past its freshness, is a plain hit for that whole minute, with the handler
/// healthy and never asked.
// Failed on 5a4271a (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_serve_stale_false_serves_another_layers_entry_past_its_freshness() {
    let server = RedisServer::start();
    let origin = origin("stale-if-error=60");
    let (cache, other) = (
        server.cache("adv-sie-off").await,
        server.cache("adv-sie-off").await,
    );
    let here = app(layer(&cache), &origin);
    let off = app(layer(&other).serve_stale(false), &origin);
    stored_then_stale(&here, &cache).await;
    origin.version.store(2, Ordering::SeqCst);
    let runs = origin.runs.load(Ordering::SeqCst);
    let got = get_page(&off).await;
    assert_eq!(
        (got, origin.runs.load(Ordering::SeqCst)),
        (answer(StatusCode::OK, "MISS", V2), runs + 1),
        "serve_stale(false): past its freshness the handler answers"
    );
}

/// "Each window is at most a day" and "Redis keeps an entry for its freshness plus the longer
/// window (a `Vary` record as long as its variant)". The variant is bounded to a day; the
/// `Vary` record is stored for its TTL plus the response's window unbounded (up to 2^31 s, 68
/// years), pinning the URL's `Vary` names in Redis long after every variant is gone.
// Failed on 5a4271a (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_vary_record_outlives_its_variant_and_the_day() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let origin = origin("stale-while-revalidate=99999999999, stale-if-error=4000000");
    let cache = server.cache("adv-vary-kept").await;
    let here = app(layer(&cache), &origin);
    let request = || {
        Request::get("/varied")
            .header(header::ACCEPT_LANGUAGE, "en")
            .body(Body::empty())
            .unwrap()
    };
    for _ in 0..2 {
        send(&here, request()).await;
    }
    cache.settle().await;
    let keys = scan_keys(&mut conn, "adv-vary-kept:*http:GET*").await;
    assert_eq!(keys.len(), 2, "the record and the variant: {keys:?}");
    let day_ms = 86_400_000 + TTL.as_millis() as i64;
    let mut left = Vec::new();
    for key in &keys {
        left.push((key.clone(), pttl(&mut conn, key).await));
    }
    assert!(
        left.iter().all(|(_, ms)| *ms > 0 && *ms <= day_ms),
        "each kept at most its freshness plus a day ({day_ms} ms): {left:?}"
    );
}

/// "`stale-while-revalidate=N`: ... one request ... runs the handler and waits for it; its
/// answer replaces the entry." When the handler's answer is one the layer does not store (the
/// resource is gone: `404`), the old `200` stays in Redis and keeps answering `STALE` for the
/// rest of the window: in another process right after, and in this one as soon as its
/// "uncacheable" memory of the URL (the TTL) runs out.
// Failed on 5a4271a (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_refresh_answered_404_leaves_the_old_200_answering_stale() {
    let server = RedisServer::start();
    let origin = origin("stale-while-revalidate=60");
    let (cache, other) = (
        server.cache("adv-swr-404").await,
        server.cache("adv-swr-404").await,
    );
    let (here, there) = (app(layer(&cache), &origin), app(layer(&other), &origin));
    stored_then_stale(&here, &cache).await;
    // The resource is deleted (by another service: the handler now answers 404).
    origin.status.store(404, Ordering::SeqCst);
    origin.version.store(2, Ordering::SeqCst);
    // The request that takes the refresh is answered stale, or with the refresh's own answer
    // when the refresh, in the background since 50cd1c7, is over before it is answered.
    let refreshed = get_page(&here).await;
    let answered = (refreshed.0, refreshed.1.as_deref());
    assert!(
        answered == (StatusCode::OK, Some("STALE")) || answered.0 == StatusCode::NOT_FOUND,
        "the request that takes the refresh: {answered:?}"
    );
    cache.settle().await;
    // The refresh is over and its answer was 404: nothing may answer the old 200 any more.
    // In the other process, one request refreshes again (held) while another is answered.
    let refreshing = held_request(&there, &origin, "/page").await;
    // (Since the fix, nothing is stored: this one waits for the held run, in its process.)
    let meanwhile = {
        let there = there.clone();
        tokio::spawn(async move { get_page(&there).await })
    };
    origin.held.add_permits(1);
    let _ = refreshing.await.unwrap();
    let meanwhile = meanwhile.await.unwrap();
    assert_eq!(
        meanwhile.0,
        StatusCode::NOT_FOUND,
        "after a refresh answered 404, the old 200 still answers: {meanwhile:?}"
    );
}

/// "A `Vary` record as long as its variant [may answer]": the record's lifetime is fixed when it
/// is first stored (that response's TTL plus its window), and a variant refreshed later may
/// answer well past it. Once the record is gone the request runs the handler at the URL's own
/// key, where no stored response is found, so a `503` reaches the caller although the variant
/// is within its `stale-if-error` window.
// Failed on 5a4271a (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_refreshed_variant_outlives_its_vary_record_and_loses_stale_if_error() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let origin = origin("stale-if-error=3");
    let cache = server.cache("adv-vary-outlived").await;
    let here = app(layer(&cache), &origin);
    let french = || {
        Request::get("/varied")
            .header(header::ACCEPT_LANGUAGE, "fr")
            .body(Body::empty())
            .unwrap()
    };
    // The record (kept 0.3 s + 3 s), then the variant.
    for expected in ["MISS", "MISS", "HIT"] {
        assert_eq!(send(&here, french()).await.0.1.as_deref(), Some(expected));
    }
    cache.settle().await;
    // Time passing is what is tested: 2 s on, the variant is stale and refreshed (v2), fresh
    // again for 0.3 s and kept 3 s past that; the record is not refreshed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    origin.version.store(2, Ordering::SeqCst);
    let refreshed = send(&here, french()).await.0;
    assert_eq!(refreshed, answer(StatusCode::OK, "MISS", "v2 Some(\"fr\")"));
    cache.settle().await;
    let record = "adv-vary-outlived:{http:GET:/varied}";
    let variant = "adv-vary-outlived:{http:GET:/varied|vary:accept-language=fr}";
    let (record_left, variant_left) = (
        pttl(&mut conn, record).await,
        pttl(&mut conn, variant).await,
    );
    eprintln!("record {record_left} ms, variant {variant_left} ms");
    // 1.5 s on: the record is gone, the variant 1.2 s past its freshness, within its 3 s.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    origin.status.store(503, Ordering::SeqCst);
    let got = send(&here, french()).await.0;
    assert_eq!(
        got,
        answer(StatusCode::OK, "STALE", "v2 Some(\"fr\")"),
        "the variant is within its stale-if-error window (record kept {record_left} ms, variant {variant_left} ms)"
    );
}

// ---------------------------------------------------------------------------------------------
// Held
// ---------------------------------------------------------------------------------------------

/// Responses that forbid stale answers, in odd spellings, in any of the three fields, on
/// duplicated lines or inside an invalid `CDN-Cache-Control`: a `503` goes to its caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_forbidding_spellings_are_never_answered_stale() {
    let server = RedisServer::start();
    for (i, headers) in [
        "stale-if-error=60, MUST-REVALIDATE",
        "stale-if-error=60\nMust-Revalidate",
        "stale-if-error=60\nsurrogate-control: must-revalidate",
        "stale-if-error=60\ncdn-cache-control: proxy-revalidate",
        "stale-if-error=60\ncdn-cache-control: max-age =5, must-revalidate",
        "stale-if-error=60\ncdn-cache-control: s-maxage=60",
        "stale-if-error=60\nsurrogate-control: S-MaxAge=60",
        "stale-if-error=60, must-revalidate=\"x\"",
        "cdn-cache-control: stale-if-error=60\ncache-control: proxy-revalidate",
        "stale-if-error=0",
        "stale-if-error=-5",
        "stale-if-error=\"60\"",
        "stale-if-error=1.5",
        "stale-if-error",
        "cdn-cache-control: stale-if-error=\"60\"\nstale-if-error=0",
    ]
    .into_iter()
    .enumerate()
    {
        let origin = origin(headers);
        let ns = format!("adv-forbid-{i}");
        let cache = server.cache(&ns).await;
        let here = app(layer(&cache), &origin);
        stored_then_stale(&here, &cache).await;
        origin.status.store(503, Ordering::SeqCst);
        let (status, x_cache, _) = get_page(&here).await;
        assert_eq!(
            (status, x_cache.as_deref()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("MISS")),
            "{headers:?}"
        );
    }
}

/// A window given as a huge number keeps the variant at most a day past its freshness, and
/// zero / negative / quoted windows keep nothing past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_responses_window_is_bounded_in_redis() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    for (i, cache_control, at_most_ms) in [
        (0, "stale-if-error=99999999999999999999", 86_400_300),
        (1, "stale-while-revalidate=2147483648", 86_400_300),
        (2, "stale-if-error=0, stale-while-revalidate=0", 300),
        (3, "stale-if-error=\"60\"", 300),
    ] {
        let origin = origin(cache_control);
        let ns = format!("adv-bound-{i}");
        let cache = server.cache(&ns).await;
        let here = app(layer(&cache), &origin);
        get_page(&here).await;
        cache.settle().await;
        let keys = scan_keys(&mut conn, &format!("{ns}:*http:GET*")).await;
        assert_eq!(keys.len(), 1, "{keys:?}");
        let left = pttl(&mut conn, &keys[0]).await;
        assert!(left > 0 && left <= at_most_ms, "{cache_control}: {left}");
    }
}

/// A personal `503` (with `Set-Cookie`) is its caller's: with a stale entry to answer, the
/// caller gets the entry (no cookie); without a window, a request that waited for the run never
/// gets the cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_personal_server_error_never_reaches_another_request() {
    let server = RedisServer::start();
    for cache_control in ["stale-if-error=60", "max-age=60"] {
        let origin = origin(cache_control);
        let ns = format!("adv-personal-{}", cache_control.len());
        let cache = server.cache(&ns).await;
        let here = app(layer(&cache), &origin);
        stored_then_stale(&here, &cache).await;
        origin.status.store(503, Ordering::SeqCst);
        origin.cookie_on_error.store(true, Ordering::SeqCst);
        let leader = {
            origin.hold.store(true, Ordering::SeqCst);
            let entered = origin.entered.notified();
            let app = here.clone();
            let task = tokio::spawn(async move {
                let request = Request::get("/page").body(Body::empty()).unwrap();
                send(&app, request).await
            });
            entered.await;
            task
        };
        let waiter = {
            let app = here.clone();
            tokio::spawn(async move {
                let request = Request::get("/page").body(Body::empty()).unwrap();
                send(&app, request).await
            })
        };
        // The waiter has joined the held run.
        let joined = cached_redis_tests::eventually(Duration::from_secs(20), || async {
            cache.stats().coalesced >= 1
        })
        .await;
        assert!(joined, "{cache_control}: the waiter joined the held run");
        origin.held.add_permits(1);
        let (led, led_headers) = leader.await.unwrap();
        let (waited, waited_headers) = waiter.await.unwrap();
        // The waiter may run the handler itself (a cookie of its own), never take the
        // leader's.
        let leaders = led_headers.get(header::SET_COOKIE);
        let waiters = waited_headers.get(header::SET_COOKIE);
        assert!(
            waiters.is_none() || waiters != leaders,
            "{cache_control}: the waiter got the leader's cookie: {waited:?} {waiters:?}"
        );
        if cache_control.starts_with("stale") {
            assert_eq!(led, answer(StatusCode::OK, "STALE", V1));
            assert!(led_headers.get(header::SET_COOKIE).is_none());
            assert_eq!(waited, answer(StatusCode::OK, "STALE", V1));
        } else {
            assert_eq!(led.0, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(waited.0, StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}

/// An invalidation in the other process while a `stale-if-error` load is held: a request that
/// starts once it returned, in either process (joining the held load or not), gets the error,
/// never the invalidated response. (The held request overlapped the invalidation: either answer
/// is linearisable; it is recorded, not asserted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_an_invalidation_racing_a_stale_if_error_load() {
    let server = RedisServer::start();
    for (name, from_here) in [("there", false), ("here", true)] {
        let origin = origin("stale-if-error=60, stale-while-revalidate=1");
        let ns = format!("adv-sie-race-{name}");
        let (cache, other) = (server.cache(&ns).await, server.cache(&ns).await);
        let (here, there) = (app(layer(&cache), &origin), app(layer(&other), &origin));
        stored_then_stale(&here, &cache).await;
        // Past the swr window: the entry is only within stale-if-error.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        origin.status.store(503, Ordering::SeqCst);
        let held = held_request(&here, &origin, "/page").await;
        let invalidator = if from_here { &cache } else { &other };
        assert!(
            CacheLayer::invalidate(invalidator, "GET", "/page")
                .await
                .unwrap()
        );
        // After the invalidation returned: a request in the held process joins the held load
        // (or leads its own), and one in the other process.
        let coalesced = cache.stats().coalesced;
        let joined = {
            let app = here.clone();
            tokio::spawn(async move { get_page(&app).await })
        };
        let elsewhere = get_page(&there).await;
        assert_eq!(
            elsewhere.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "{name}: {elsewhere:?}"
        );
        // It has joined the held run, or (the flight revoked) answered on its own.
        let reached = cached_redis_tests::eventually(Duration::from_secs(20), || async {
            cache.stats().coalesced > coalesced || joined.is_finished()
        })
        .await;
        assert!(reached);
        origin.held.add_permits(1);
        let overlapped = held.await.unwrap();
        let joined = joined.await.unwrap();

        assert_eq!(
            joined.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "{name}: {joined:?}"
        );
        eprintln!("{name}: the request that overlapped the invalidation got {overlapped:?}");
    }
}

/// A `POST` through the layer in one process while the other backs the URL off after a
/// `stale-if-error` answer: the backed-off process answers the error, not the removed entry; the
/// `HEAD` entry is removed with the `GET`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_write_ends_a_back_off_and_takes_head_along() {
    let server = RedisServer::start();
    let origin = origin("stale-if-error=60");
    let (cache, other) = (
        server.cache("adv-sie-write").await,
        server.cache("adv-sie-write").await,
    );
    let (here, there) = (app(layer(&cache), &origin), app(layer(&other), &origin));
    stored_then_stale(&here, &cache).await;
    let head = || Request::head("/page").body(Body::empty()).unwrap();
    assert_eq!(send(&here, head()).await.0.1.as_deref(), Some("MISS"));
    cache.settle().await;
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    origin.status.store(503, Ordering::SeqCst);
    assert_eq!(get_page(&there).await, answer(StatusCode::OK, "STALE", V1));
    assert_eq!(send(&there, head()).await.0.1.as_deref(), Some("STALE"));
    // The write, in the other process, during the back-off.
    let write = Request::post("/page").body(Body::empty()).unwrap();
    assert_eq!(send(&here, write).await.0.0, StatusCode::NO_CONTENT);
    let (status, _, _) = get_page(&there).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (head_answer, _) = send(&there, head()).await;
    assert_eq!(head_answer.0, StatusCode::SERVICE_UNAVAILABLE);
}

/// A `POST` through the layer racing a held stale refresh in the other process: the refresh
/// (which read v1) stores nothing, and nothing stale answers after the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_write_racing_a_stale_refresh_in_another_process() {
    let server = RedisServer::start();
    let origin = origin("stale-while-revalidate=60");
    let (cache, other) = (
        server.cache("adv-swr-write").await,
        server.cache("adv-swr-write").await,
    );
    let (here, there) = (app(layer(&cache), &origin), app(layer(&other), &origin));
    stored_then_stale(&here, &cache).await;
    let refreshing = held_request(&there, &origin, "/page").await;
    let write = Request::post("/page").body(Body::empty()).unwrap();
    assert_eq!(send(&here, write).await.0.0, StatusCode::NO_CONTENT);
    // After the write: a request in the process whose refresh is held.
    let after = {
        let app = there.clone();
        tokio::spawn(async move { get_page(&app).await })
    };
    let reached = cached_redis_tests::eventually(Duration::from_secs(20), || async {
        other.stats().coalesced >= 1 || after.is_finished()
    })
    .await;
    assert!(reached);
    origin.held.add_permits(1);
    let (_, _, refreshed) = refreshing.await.unwrap();
    assert_eq!(refreshed, V1);
    assert_eq!(after.await.unwrap(), answer(StatusCode::OK, "MISS", V2));
    cache.settle().await;
    other.settle().await;
    for app in [&here, &there] {
        assert_eq!(get_page(app).await, answer(StatusCode::OK, "HIT", V2));
    }
}

/// An entry copied under another URL's key (someone with write access to Redis) answers
/// neither as a stale-if-error answer (the caller gets its own error) nor as a stale answer
/// (the handler answers); nothing panics or hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_copied_entry_is_never_a_stale_answer() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    for (i, cache_control) in ["stale-if-error=60", "stale-while-revalidate=60"]
        .into_iter()
        .enumerate()
    {
        let origin = origin(cache_control);
        let ns = format!("adv-copied-{i}");
        let cache = server.cache(&ns).await;
        let here = app(layer(&cache), &origin);
        get_path(&here, "/other").await;
        stored_then_stale(&here, &cache).await;
        let other_key = scan_keys(&mut conn, &format!("{ns}:*/other*")).await;
        let page_key = scan_keys(&mut conn, &format!("{ns}:*/page*")).await;
        let bytes = get_raw(&mut conn, &other_key[0]).await.unwrap();
        let left = pttl(&mut conn, &page_key[0]).await;
        let _: () = redis::cmd("SET")
            .arg(&page_key[0])
            .arg(bytes)
            .arg("PX")
            .arg(left)
            .query_async(&mut conn)
            .await
            .unwrap();
        if i == 0 {
            origin.status.store(503, Ordering::SeqCst);
            let got = tokio::time::timeout(Duration::from_secs(10), get_page(&here))
                .await
                .expect("no hang");
            assert_eq!(got.0, StatusCode::SERVICE_UNAVAILABLE, "{got:?}");
        } else {
            let refreshing = held_request(&here, &origin, "/page").await;
            let got = tokio::time::timeout(Duration::from_secs(10), get_page(&here))
                .await
                .expect("no hang");
            assert_eq!(got.2, V1, "the handler's, never /other's: {got:?}");
            assert_ne!(got.1.as_deref(), Some("STALE"));
            origin.held.add_permits(1);
            refreshing.await.unwrap();
        }
    }
}

/// The client of a held stale refresh goes away: the next request is not stuck behind it,
/// and is answered (stale, or by a refresh of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_cancelled_stale_refresh_leaves_nobody_waiting() {
    let server = RedisServer::start();
    for cache_control in ["stale-while-revalidate=60", "stale-if-error=60"] {
        let origin = origin(cache_control);
        let ns = format!("adv-cancel-{}", cache_control.len());
        let cache = server.cache(&ns).await;
        let here = app(layer(&cache), &origin);
        stored_then_stale(&here, &cache).await;
        origin.version.store(2, Ordering::SeqCst);
        let refreshing = held_request(&here, &origin, "/page").await;
        refreshing.abort();
        let _ = refreshing.await;
        let got = tokio::time::timeout(Duration::from_secs(10), get_page(&here))
            .await
            .expect("not stuck behind the cancelled refresh");
        assert_eq!(got.0, StatusCode::OK, "{cache_control}: {got:?}");
        // The lease the cancelled refresh held goes back (its drop guard): within a few
        // requests one refreshes and stores v2.
        let mut answers = vec![got];
        for _ in 0..3 {
            cache.settle().await;
            answers.push(get_page(&here).await);
        }
        assert!(
            answers.contains(&answer(StatusCode::OK, "HIT", V2)),
            "{cache_control}: {answers:?}"
        );
    }
}

/// Redis paused (SIGSTOP) with a stale entry in it: requests are answered by the handler
/// within `op_timeout`, never failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_redis_paused_during_stale_answers() {
    let server = RedisServer::start();
    let origin = origin("stale-while-revalidate=60, stale-if-error=60");
    let cache = server
        .cache_builder("adv-paused")
        .op_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let here = app(layer(&cache), &origin);
    stored_then_stale(&here, &cache).await;
    origin.version.store(2, Ordering::SeqCst);
    server.pause();
    let started = Instant::now();
    let got = get_page(&here).await;
    let took = started.elapsed();
    origin.status.store(503, Ordering::SeqCst);
    let failed = get_page(&here).await;
    server.resume();
    assert_eq!(got.0, StatusCode::OK, "{got:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(
        failed.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "nothing to read: {failed:?}"
    );
}

/// `If-None-Match` against a stale answer: a `304` only when it matches, `X-Cache: STALE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_conditional_request_against_a_stale_answer() {
    let server = RedisServer::start();
    let origin = origin("stale-if-error=60\netag: \"v1\"");
    let cache = server.cache("adv-cond").await;
    let here = app(layer(&cache), &origin);
    stored_then_stale(&here, &cache).await;
    origin.status.store(503, Ordering::SeqCst);
    let conditional = |tag: &str| {
        Request::get("/page")
            .header(header::IF_NONE_MATCH, tag)
            .body(Body::empty())
            .unwrap()
    };
    let (matched, headers) = send(&here, conditional("\"v1\"")).await;
    assert_eq!(matched.0, StatusCode::NOT_MODIFIED, "{matched:?}");
    assert_eq!(headers["x-cache"], "STALE");
    let (other, _) = send(&here, conditional("\"v0\"")).await;
    assert_eq!(other, answer(StatusCode::OK, "STALE", V1));
}
