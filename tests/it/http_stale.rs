//! Stale answers from `http::CacheLayer` (RFC 5861), as the response's own `Cache-Control`
//! allows: `stale-while-revalidate` answers with the stored response while one request, in one
//! process, runs the handler in the background; `stale-if-error` answers in place of a `500`, `502`, `503` or
//! `504` or a failing service; neither for a response that forbids it, nor after an
//! invalidation, nor with `serve_stale(false)`. On a real axum app over real Redis; each
//! response is fresh for the layer's 300 ms TTL, and the tests wait that out.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use cached_redis::Cache;
use cached_redis::http::CacheLayer;
use cached_redis_tests::{RedisServer, pttl};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

#[path = "support/http_call.rs"]
mod http_call;
use http_call::call;

/// The origin behind the layer: its data's version, what it answers with, how often it ran,
/// and a gate a run can be held at.
struct Origin {
    version: AtomicU32,
    runs: AtomicU32,
    status: AtomicU16,
    cache_control: Mutex<&'static str>,
    /// What `/varied` varies on.
    vary: Mutex<&'static str>,
    hold: AtomicBool,
    held: tokio::sync::Semaphore,
    entered: tokio::sync::Notify,
}

type Shared = Arc<Origin>;

fn origin(cache_control: &'static str) -> Shared {
    Arc::new(Origin {
        version: AtomicU32::new(1),
        runs: AtomicU32::new(0),
        status: AtomicU16::new(200),
        cache_control: Mutex::new(cache_control),
        vary: Mutex::new("accept-language"),
        hold: AtomicBool::new(false),
        held: tokio::sync::Semaphore::new(0),
        entered: tokio::sync::Notify::new(),
    })
}

/// `/page`, and `/varied`, which varies on `Accept-Language`.
async fn page(
    State(origin): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response<Body> {
    origin.runs.fetch_add(1, Ordering::SeqCst);
    // What the data was when the run read it.
    let version = origin.version.load(Ordering::SeqCst);
    if origin.hold.swap(false, Ordering::SeqCst) {
        origin.entered.notify_one();
        origin.held.acquire().await.unwrap().forget();
    }
    let status = StatusCode::from_u16(origin.status.load(Ordering::SeqCst)).unwrap();
    let cache_control = *origin.cache_control.lock().unwrap();
    let language = headers.get(header::ACCEPT_LANGUAGE).cloned();
    let body = format!(
        "v{version} {:?}",
        language.map(|l| l.to_str().unwrap().to_owned())
    );
    let mut response = (status, [(header::CACHE_CONTROL, cache_control)], body).into_response();
    if uri.path() == "/varied" {
        let vary = header::HeaderValue::from_static(*origin.vary.lock().unwrap());
        response.headers_mut().insert(header::VARY, vary);
    }
    response
}

fn app(layer: CacheLayer, origin: &Shared) -> Router {
    Router::new()
        .route("/page", get(page))
        .route("/varied", get(page))
        .layer(layer)
        .with_state(origin.clone())
}

const TTL: Duration = Duration::from_millis(300);

fn layer(cache: &Cache) -> CacheLayer {
    CacheLayer::new(cache.clone(), TTL)
}

/// Status, `X-Cache` and body of a `GET /page`.
async fn get_page(app: &Router) -> (StatusCode, Option<String>, String) {
    call(app, Request::get("/page").body(Body::empty()).unwrap()).await
}

fn answer(status: StatusCode, x_cache: &str, body: &str) -> (StatusCode, Option<String>, String) {
    (status, Some(x_cache.to_owned()), body.to_owned())
}

const V1: &str = "v1 None";
const V2: &str = "v2 None";

/// Stores `/page` through `app`, and waits out its freshness.
async fn stored_then_stale(app: &Router, cache: &Cache) {
    assert_eq!(get_page(app).await, answer(StatusCode::OK, "MISS", V1));
    assert_eq!(get_page(app).await.1.as_deref(), Some("HIT"));
    cache.settle().await;
    // Time passing is what is tested: the response goes stale after the layer's TTL.
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
}

/// Starts a `GET /page` whose handler run is held, and waits until it is.
async fn held_request(
    app: &Router,
    origin: &Shared,
) -> tokio::task::JoinHandle<(StatusCode, Option<String>, String)> {
    origin.hold.store(true, Ordering::SeqCst);
    let entered = origin.entered.notified();
    let app = app.clone();
    let held = tokio::spawn(async move { get_page(&app).await });
    entered.await;
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_stale_while_one_request_refreshes() {
    let server = RedisServer::start();
    let origin = origin("stale-while-revalidate=60");
    let (cache, other) = (
        server.cache("http-swr").await,
        server.cache("http-swr").await,
    );
    let (here, there) = (app(layer(&cache), &origin), app(layer(&other), &origin));
    stored_then_stale(&here, &cache).await;
    origin.version.store(2, Ordering::SeqCst);
    // One request takes the refresh, in this process: the handler runs in the background,
    // held, and that request too is answered stale at once.
    let refreshing = held_request(&here, &origin).await;
    assert_eq!(
        refreshing.await.unwrap(),
        answer(StatusCode::OK, "STALE", V1)
    );
    // Every other request, in this process and the other, is answered stale too.
    for app in [&here, &there, &there] {
        assert_eq!(get_page(app).await, answer(StatusCode::OK, "STALE", V1));
    }
    assert_eq!(origin.runs.load(Ordering::SeqCst), 2, "one refresh");
    origin.held.add_permits(1);
    cache.settle().await;
    assert_eq!(get_page(&there).await, answer(StatusCode::OK, "HIT", V2));
    assert_eq!(origin.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variant_is_answered_stale_too() {
    let server = RedisServer::start();
    let origin = origin("stale-while-revalidate=60");
    let cache = server.cache("http-swr-vary").await;
    let here = app(layer(&cache), &origin);
    let french = || {
        Request::get("/varied")
            .header(header::ACCEPT_LANGUAGE, "fr")
            .body(Body::empty())
            .unwrap()
    };
    let x_cache =
        |response: &Response<Body>| response.headers()["x-cache"].to_str().unwrap().to_owned();
    // The first stores the `Vary` record; the second, the variant.
    for expected in ["MISS", "MISS", "HIT"] {
        let response = here.clone().oneshot(french()).await.unwrap();
        assert_eq!(x_cache(&response), expected);
    }
    cache.settle().await;
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    let runs = origin.runs.load(Ordering::SeqCst);
    origin.hold.store(true, Ordering::SeqCst);
    let entered = origin.entered.notified();
    let refreshing = tokio::spawn(here.clone().oneshot(french()));
    entered.await;
    let response = here.clone().oneshot(french()).await.unwrap();
    assert_eq!(
        x_cache(&response),
        "STALE",
        "the record outlives the variant's freshness"
    );
    let refreshing = refreshing.await.unwrap().unwrap();
    assert_eq!(
        x_cache(&refreshing),
        "STALE",
        "the refresh runs in the background"
    );
    origin.held.add_permits(1);
    cache.settle().await;
    let response = here.clone().oneshot(french()).await.unwrap();
    assert_eq!(x_cache(&response), "HIT");
    assert_eq!(origin.runs.load(Ordering::SeqCst), runs + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_answers_in_place_of_a_server_error() {
    let server = RedisServer::start();
    let origin = origin("stale-if-error=60");
    let (cache, other) = (
        server.cache("http-sie").await,
        server.cache("http-sie").await,
    );
    let (here, there) = (app(layer(&cache), &origin), app(layer(&other), &origin));
    stored_then_stale(&here, &cache).await;
    for status in [503, 500, 504, 502] {
        origin.status.store(status, Ordering::SeqCst);
        let runs = origin.runs.load(Ordering::SeqCst);
        // A process that has not backed off runs the handler, and answers stale for its error.
        let fresh_process = app(layer(&server.cache("http-sie").await), &origin);
        assert_eq!(
            get_page(&fresh_process).await,
            answer(StatusCode::OK, "STALE", V1),
            "{status}"
        );
        assert_eq!(origin.runs.load(Ordering::SeqCst), runs + 1, "{status}");
    }
    // The process that answered stale backs the URL off for a second: no handler run.
    assert_eq!(get_page(&there).await, answer(StatusCode::OK, "STALE", V1));
    let runs = origin.runs.load(Ordering::SeqCst);
    assert_eq!(get_page(&there).await, answer(StatusCode::OK, "STALE", V1));
    assert_eq!(origin.runs.load(Ordering::SeqCst), runs, "backed off");
    // Once the handler answers again, its answer replaces the entry.
    origin.status.store(200, Ordering::SeqCst);
    origin.version.store(2, Ordering::SeqCst);
    assert_eq!(get_page(&here).await, answer(StatusCode::OK, "MISS", V2));
    cache.settle().await;
    assert_eq!(get_page(&here).await, answer(StatusCode::OK, "HIT", V2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_answers_in_place_of_a_failing_service() {
    let server = RedisServer::start();
    let cache = server.cache("http-sie-service").await;
    let failing = Arc::new(AtomicBool::new(false));
    let service = {
        let failing = failing.clone();
        tower::service_fn(move |_: Request<Body>| {
            let failing = failing.load(Ordering::SeqCst);
            async move {
                if failing {
                    return Err(std::io::Error::other("the upstream is down"));
                }
                let response = Response::builder()
                    .header(header::CACHE_CONTROL, "stale-if-error=60")
                    .body(Body::from("stored"))
                    .unwrap();
                Ok(response)
            }
        })
    };
    let service = tower::Layer::layer(&layer(&cache), service);
    let call = || async {
        let request = Request::get("/s").body(Body::empty()).unwrap();
        service.clone().oneshot(request).await
    };
    call().await.unwrap();
    cache.settle().await;
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    failing.store(true, Ordering::SeqCst);
    let response = call().await.expect("the stored response, not the error");
    assert_eq!(response.headers()["x-cache"], "STALE");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_window_or_where_forbidden_the_error_is_answered() {
    let server = RedisServer::start();
    for (name, cache_control, serve_stale) in [
        ("none", "max-age=60", true),
        ("must", "stale-if-error=60, must-revalidate", true),
        ("proxy", "stale-if-error=60, proxy-revalidate", true),
        ("s-maxage", "s-maxage=60, stale-if-error=60", true),
        ("switched-off", "stale-if-error=60", false),
    ] {
        let origin = origin(cache_control);
        let cache = server.cache(&format!("http-sie-{name}")).await;
        let here = app(layer(&cache).serve_stale(serve_stale), &origin);
        stored_then_stale(&here, &cache).await;
        origin.status.store(503, Ordering::SeqCst);
        let (status, x_cache, _) = get_page(&here).await;
        assert_eq!(
            (status, x_cache.as_deref()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("MISS")),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_an_entry_only_as_long_as_it_may_answer() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    // The variant and the URL's `Vary` record: their freshness plus the longer window.
    for (name, cache_control, variant_ms, record_ms) in [
        ("plain", "max-age=60", 300, 300),
        (
            "forbidden",
            "s-maxage=60, stale-while-revalidate=600",
            300,
            300,
        ),
        (
            "windows",
            "stale-while-revalidate=5, stale-if-error=20",
            20_300,
            20_300,
        ),
    ] {
        let origin = origin(cache_control);
        let cache = server.cache(&format!("http-kept-{name}")).await;
        let here = app(layer(&cache), &origin);
        let request = || {
            Request::get("/varied")
                .header(header::ACCEPT_LANGUAGE, "en")
                .body(Body::empty())
                .unwrap()
        };
        for _ in 0..2 {
            here.clone().oneshot(request()).await.unwrap();
        }
        cache.settle().await;
        let keys =
            cached_redis_tests::scan_keys(&mut conn, &format!("http-kept-{name}:*http:GET*")).await;
        assert_eq!(
            keys.len(),
            2,
            "{name}: the record and the variant: {keys:?}"
        );
        for key in keys {
            let at_most_ms = if key.contains("|vary:") {
                variant_ms
            } else {
                record_ms
            };
            let left = pttl(&mut conn, &key).await;
            assert!(left > 0 && left <= at_most_ms, "{name}: {key}: {left} ms");
            assert!(left > at_most_ms - 1_000, "{name}: {key}: {left} ms");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_racing_a_stale_refresh_is_never_undone() {
    let server = RedisServer::start();
    let origin = origin("stale-while-revalidate=60, stale-if-error=60");
    let (cache, other) = (
        server.cache("http-swr-race").await,
        server.cache("http-swr-race").await,
    );
    let (here, there) = (app(layer(&cache), &origin), app(layer(&other), &origin));
    stored_then_stale(&here, &cache).await;
    // A refresh reads the data as it was (v1), and is held in the background.
    let refreshing = held_request(&here, &origin).await;
    assert_eq!(
        refreshing.await.unwrap(),
        answer(StatusCode::OK, "STALE", V1)
    );
    // The data changes and the other process invalidates.
    origin.version.store(2, Ordering::SeqCst);
    assert!(
        CacheLayer::invalidate(&other, "GET", "/page")
            .await
            .unwrap()
    );
    // Nothing stale answers any more: the next request runs the handler.
    assert_eq!(get_page(&there).await, answer(StatusCode::OK, "MISS", V2));
    other.settle().await;
    origin.held.add_permits(1);
    // The refresh read v1 before the write: its write-back is refused.
    cache.settle().await;
    for app in [&here, &there] {
        assert_eq!(get_page(app).await, answer(StatusCode::OK, "HIT", V2));
    }
    // And a server error after an invalidation is the error: nothing stale is left to answer.
    origin.status.store(503, Ordering::SeqCst);
    assert!(
        CacheLayer::invalidate(&cache, "GET", "/page")
            .await
            .unwrap()
    );
    let (status, _, _) = get_page(&there).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_that_cannot_be_replayed_waits_for_the_refresh() {
    let server = RedisServer::start();
    let origin = origin("stale-while-revalidate=60");
    let cache = server.cache("http-swr-planted").await;
    let here = app(layer(&cache), &origin);
    stored_then_stale(&here, &cache).await;
    // Someone with write access to Redis adds a `Set-Cookie` to the stored response: the
    // layer would never have stored it, and does not replay it.
    let mut conn = server.conn().await;
    let keys = cached_redis_tests::scan_keys(&mut conn, "http-swr-planted:*").await;
    let key = keys.iter().find(|k| k.contains("http:GET")).unwrap();
    let stored =
        String::from_utf8(cached_redis_tests::get_raw(&mut conn, key).await.unwrap()).unwrap();
    let planted = stored.replacen(
        r#""headers":["#,
        r#""headers":[["set-cookie",{"text":"s=1"}],"#,
        1,
    );
    assert_ne!(planted, stored);
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(planted)
        .arg("KEEPTTL")
        .query_async(&mut conn)
        .await
        .unwrap();
    origin.version.store(2, Ordering::SeqCst);
    // The request takes the refresh; the entry it would be answered with cannot be replayed,
    // so it is answered by the handler: the run it started in the background (waited for),
    // or, if that has not started yet, its own call (and the background run stores nothing).
    origin.hold.store(true, Ordering::SeqCst);
    let entered = origin.entered.notified();
    let app = here.clone();
    let waiting = tokio::spawn(async move { get_page(&app).await });
    entered.await;
    origin.held.add_permits(1);
    let (status, x_cache, body) = waiting.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, V2));
    assert_ne!(x_cache.as_deref(), Some("STALE"));
    cache.settle().await;
    assert_eq!(origin.runs.load(Ordering::SeqCst), 2, "one handler run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vary_record_is_made_anew_when_the_response_varies_otherwise() {
    let server = RedisServer::start();
    let origin = origin("stale-if-error=600");
    let cache = server.cache("http-swr-revary").await;
    let here = app(layer(&cache), &origin);
    let with_language = |language: &'static str| {
        Request::get("/varied")
            .header(header::ACCEPT_LANGUAGE, language)
            .body(Body::empty())
            .unwrap()
    };
    // The record (kept a day: the response may answer stale) and the French variant.
    for expected in ["MISS", "MISS", "HIT"] {
        let (_, x_cache, _) = call(&here, with_language("fr")).await;
        assert_eq!(x_cache.as_deref(), Some(expected));
    }
    // A deploy: the URL now varies on another header. The first variant read under the old
    // record answers otherwise, and removes the record with itself.
    *origin.vary.lock().unwrap() = "x-region";
    let (_, x_cache, _) = call(&here, with_language("de")).await;
    assert_eq!(x_cache.as_deref(), Some("MISS"));
    cache.settle().await;
    tokio::time::sleep(TTL).await; // this process's memory of the URL as not stored
    // The next requests make the record anew, then store and hit the new variant.
    for expected in ["MISS", "MISS", "HIT"] {
        let (_, x_cache, _) = call(&here, with_language("de")).await;
        assert_eq!(x_cache.as_deref(), Some(expected));
    }
}
