//! Unsafe methods invalidate (`http::CacheLayer`, RFC 9111 §4.4), attacked: the URL a write
//! names spelled otherwise than the read's, `Location`s the layer must resolve, nested routers,
//! forwarded hosts, a client that goes away mid-invalidation, Redis black-holed during a
//! write, and the methods and statuses that must not invalidate. Real axum apps over real
//! Redis. Tests named `bug_*` fail: each is a stale response served after a successful write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::any;
use cached_redis::Cache;
use cached_redis::http::CacheLayer;
use cached_redis_tests::{Proxy, RedisServer, command_calls, eventually};

#[path = "support/http_call.rs"]
mod http_call;
use http_call::call;

/// The data's version, bumped by every write.
type Version = Arc<AtomicU32>;

/// Every path reads the version; every other method writes it and answers with the
/// `Location` and `Content-Location` the request asks for (`x-answer-location`,
/// `x-answer-content-location`) and the status `x-answer-status` (201 unless given).
fn routes(version: &Version) -> Router {
    Router::new()
        .route("/items/{id}", any(resource))
        .route("/items/{id}/{action}", any(resource))
        .route("/items/", any(resource))
        .route("/list", any(resource))
        .with_state(version.clone())
}

fn app(layer: CacheLayer, version: &Version) -> Router {
    routes(version).layer(layer)
}

fn layer(cache: &Cache) -> CacheLayer {
    CacheLayer::new(cache.clone(), Duration::from_secs(60))
}

async fn resource(
    State(version): State<Version>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> axum::response::Response {
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        let v = version.load(Ordering::SeqCst);
        return format!("{} v{v}", uri.path()).into_response();
    }
    version.fetch_add(1, Ordering::SeqCst);
    let status = headers
        .get("x-answer-status")
        .and_then(|s| s.to_str().ok()?.parse::<u16>().ok())
        .map_or(StatusCode::CREATED, |s| StatusCode::from_u16(s).unwrap());
    let mut response = status.into_response();
    for (asked, answered) in [
        ("x-answer-location", header::LOCATION),
        ("x-answer-content-location", header::CONTENT_LOCATION),
    ] {
        if let Some(value) = headers.get(asked) {
            response.headers_mut().insert(answered, value.clone());
        }
    }
    response
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        builder = builder.header(header::HOST, "shop.example");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).unwrap()
}

/// Reads `uri` until it is a hit.
async fn warm(app: &Router, uri: &str, headers: &[(&str, &str)]) {
    call(app, request("GET", uri, headers)).await;
    let (_, cached, _) = call(app, request("GET", uri, headers)).await;
    assert_eq!(cached.as_deref(), Some("HIT"), "{uri} is stored");
}

/// Whether a read of `uri` is a hit holding what was stored before the last write.
async fn stale(app: &Router, version: &Version, uri: &str, headers: &[(&str, &str)]) -> bool {
    let (_, cached, body) = call(app, request("GET", uri, headers)).await;
    let now = format!("v{}", version.load(Ordering::SeqCst));
    cached.as_deref() == Some("HIT") && !body.ends_with(&now)
}

// ---------------------------------------------------------------------------------------
// Bugs.

/// `Location` and `Content-Location` are URI references (RFC 9110 §10.2.2, §8.7): a relative
/// one is resolved against the request's URI, and names a URL on the request's host. The
/// layer keeps only those starting with `/`, so each of these leaves the URL the write's
/// answer names stale.
// Failed on 0365313 (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_relative_location_leaves_the_url_it_names_stale() {
    let server = RedisServer::start();
    let cache = server.cache("adv-writes-relative").await;
    let version = Version::default();
    let app = app(layer(&cache), &version);
    // (the write's URI, its answer's header, the value, the URL it names)
    let cases = [
        ("/items/1/rename", "x-answer-location", "../2", "/items/2"),
        ("/items/", "x-answer-location", "3", "/items/3"),
        (
            "/list?page=1",
            "x-answer-content-location",
            "?page=2",
            "/list?page=2",
        ),
        (
            "/items/1",
            "x-answer-location",
            "//shop.example/items/4",
            "/items/4",
        ),
    ];
    let mut stale_after = Vec::new();
    for (write, asked, value, named) in cases {
        warm(&app, named, &[]).await;
        let (status, _, _) = call(&app, request("POST", write, &[(asked, value)])).await;
        assert_eq!(status, StatusCode::CREATED);
        if stale(&app, &version, named, &[]).await {
            stale_after.push(format!("{write} answered {value}: {named} stale"));
        }
    }
    assert!(stale_after.is_empty(), "{stale_after:#?}");
}

/// An absolute `Location` on the host the client sent the request to, behind a reverse
/// proxy: the application builds it from `X-Forwarded-Host` / `Forwarded` (as frameworks
/// read the host, and as the layer keys on), but `same_host` compares it with `Host` only, so
/// the URL it names stays stale. An IPv6 literal `Host` without a port loses its last
/// character to the port split.
// Failed on 0365313 (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_an_absolute_location_on_the_requests_host_leaves_the_url_stale() {
    let server = RedisServer::start();
    let cache = server.cache("adv-writes-host").await;
    let version = Version::default();
    let app = app(layer(&cache), &version);
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("host", "app:8080"), ("x-forwarded-host", "shop.example")],
            "https://shop.example/items/2",
        ),
        (
            &[
                ("host", "app:8080"),
                ("forwarded", "host=shop.example;proto=https"),
            ],
            "https://shop.example/items/3",
        ),
        (&[("host", "[::1]")], "http://[::1]/items/4"),
    ];
    let mut stale_after = Vec::new();
    for (headers, location) in cases {
        let named = location
            .parse::<axum::http::Uri>()
            .unwrap()
            .path()
            .to_owned();
        warm(&app, &named, headers).await;
        let mut write = headers.to_vec();
        write.push(("x-answer-location", location));
        let (status, _, _) = call(&app, request("POST", "/items/1", &write)).await;
        assert_eq!(status, StatusCode::CREATED);
        if stale(&app, &version, &named, headers).await {
            stale_after.push(format!("{headers:?} answered {location}: stale"));
        }
    }
    assert!(stale_after.is_empty(), "{stale_after:#?}");
}

/// Inside a `Router::nest`, the handler's `Location` names the URL the client uses
/// (`/t/acme/items/2`, as it must), but the layer keys that read under the path it sees
/// (`http:GET:/items/2|original=/t/acme/items/2`) and removes `http:GET:/t/acme/items/2`,
/// which no read is stored under.
// Failed on 0365313 (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_location_inside_a_nest_leaves_the_url_stale() {
    let server = RedisServer::start();
    let cache = server.cache("adv-writes-nest-location").await;
    let version = Version::default();
    let app: Router = Router::new().nest("/t/{tenant}", app(layer(&cache), &version));
    warm(&app, "/t/acme/items/2", &[]).await;
    let location = [("x-answer-location", "/t/acme/items/2")];
    let (status, _, _) = call(&app, request("POST", "/t/acme/items/1", &location)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        !stale(&app, &version, "/t/acme/items/2", &[]).await,
        "the write's Location, /t/acme/items/2, is served as stored before the write"
    );
}

/// A client that goes away once the handler has written (hyper drops the service's future):
/// the removals not yet sent are never sent, nor kept for replay, and every read after the
/// write gets what was stored before it until the TTL.
// Failed on 0365313 (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_write_whose_client_went_away_leaves_its_url_stale() {
    let server = RedisServer::start();
    let proxy = Arc::new(Proxy::start(server.port()).await);
    let mut admin = server.conn().await;
    let builder = Cache::builder(&proxy.url())
        .namespace("adv-writes-cancel")
        .op_timeout(Duration::from_secs(5));
    let (cache, writes) = proxy.cache_and_writes(&mut admin, builder).await;
    let version = Version::default();
    let app = app(layer(&cache), &version);
    warm(&app, "/items/1", &[]).await;
    cache.settle().await;

    // The handler writes, then the first removal's reply is held: the client is gone by then.
    let inner = routes(&version).layer(axum::middleware::from_fn({
        let held = proxy.clone();
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let held = held.clone();
            async move {
                let write = request.method() != axum::http::Method::GET;
                let answer = next.run(request).await;
                if write {
                    held.hold_replies(writes);
                }
                answer
            }
        }
    }));
    let app_holding: Router = inner.layer(layer(&cache));
    let before = command_calls(&mut admin, "evalsha").await;
    let writing = tokio::spawn({
        let app = app_holding.clone();
        async move { call(&app, request("POST", "/items/1", &[])).await }
    });
    let sent = eventually(Duration::from_secs(10), || {
        let mut admin = admin.clone();
        async move { command_calls(&mut admin, "evalsha").await > before }
    })
    .await;
    assert!(sent, "the first removal reached Redis");
    writing.abort();
    let _ = writing.await;
    proxy.release_replies(writes);
    assert_eq!(version.load(Ordering::SeqCst), 1, "the write was made");
    cache.settle().await;
    assert!(
        !stale(&app_holding, &version, "/items/1", &[]).await,
        "/items/1 is served as stored before the write"
    );
}

// ---------------------------------------------------------------------------------------
// Held.

/// A request's extra headers.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// A write spelled otherwise than the read (query order, absolute-form URI, HTTP/2's
/// `:authority`, forwarded and tenant headers, another tenant's nest prefix) removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_spelled_otherwise_removes_the_read() {
    let server = RedisServer::start();
    let cache = server.cache("adv-writes-spelling").await;
    let version = Version::default();
    let app = app(layer(&cache), &version);
    let cases: [(&str, Headers<'_>, &str, Headers<'_>); 4] = [
        ("/list?b=1&a=2", &[], "/list?a=2&b=1", &[]),
        (
            "/items/1",
            &[("x-forwarded-host", "a.example"), ("x-tenant-id", "7")],
            "http://shop.example/items/1",
            &[("host", "other.example")],
        ),
        ("https://shop.example:8443/items/2", &[], "/items/2", &[]),
        (
            "/items/3",
            &[("x-forwarded-prefix", "/api"), ("forwarded", "host=b")],
            "/items/3",
            &[],
        ),
    ];
    for (read, read_headers, write, write_headers) in cases {
        warm(&app, read, read_headers).await;
        call(&app, request("PUT", write, write_headers)).await;
        assert!(
            !stale(&app, &version, read, read_headers).await,
            "{read} after PUT {write}"
        );
    }
    // A nest: the layer sees the stripped path, every tenant's entry of it goes.
    let nested: Router = Router::new().nest("/t/{tenant}", app.clone());
    warm(&nested, "/t/acme/items/5", &[]).await;
    call(&nested, request("DELETE", "/t/acme/items/5", &[])).await;
    assert!(!stale(&nested, &version, "/t/acme/items/5", &[]).await);
}

/// Safe methods, error statuses and the switch remove nothing; a custom method and a 3xx do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_successful_unsafe_methods_remove() {
    let server = RedisServer::start();
    let cache = server.cache("adv-writes-methods").await;
    let version = Version::default();
    let app = app(layer(&cache), &version);
    warm(&app, "/items/1", &[]).await;
    for method in ["OPTIONS", "TRACE"] {
        let (status, cached, _) = call(&app, request(method, "/items/1", &[])).await;
        assert_eq!((status, cached), (StatusCode::CREATED, None), "{method}");
        let (_, cached, _) = call(&app, request("GET", "/items/1", &[])).await;
        assert_eq!(cached.as_deref(), Some("HIT"), "after {method}");
    }
    for status in ["400", "404", "409", "500", "101"] {
        let failing = [
            ("x-answer-status", status),
            ("x-answer-location", "/items/1"),
        ];
        call(&app, request("POST", "/items/1", &failing)).await;
        let (_, cached, _) = call(&app, request("GET", "/items/1", &[])).await;
        assert_eq!(cached.as_deref(), Some("HIT"), "after a {status}");
    }
    let off = crate::app(layer(&cache).invalidate_on_writes(false), &version);
    call(&off, request("DELETE", "/items/1", &[])).await;
    let (_, cached, _) = call(&app, request("GET", "/items/1", &[])).await;
    assert_eq!(cached.as_deref(), Some("HIT"), "switched off");
    for (method, status) in [("PURGE", "200"), ("POST", "303")] {
        warm(&app, "/items/1", &[]).await;
        call(
            &app,
            request(method, "/items/1", &[("x-answer-status", status)]),
        )
        .await;
        assert!(
            !stale(&app, &version, "/items/1", &[]).await,
            "{method} {status}"
        );
    }
}

/// Redis black-holed during a write: the handler's answer reaches the client, and the
/// removals are replayed once Redis answers again; but the answer waits for every removal in
/// turn (3 URLs x GET, HEAD x the key, its variants), each bounded by `op_timeout` on its own,
/// so it comes many times `op_timeout` late (README: "every call returns the loader's result
/// within `op_timeout`").
// Failed on 0365313 (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_with_redis_black_holed_a_write_answers_many_op_timeouts_late() {
    let server = RedisServer::start();
    let op_timeout = Duration::from_millis(300);
    let cache = server
        .cache_builder("adv-writes-paused")
        .op_timeout(op_timeout)
        .build()
        .await
        .unwrap();
    let version = Version::default();
    let app = app(layer(&cache), &version);
    warm(&app, "/items/1", &[]).await;
    server.pause();
    let started = Instant::now();
    let answer = [
        ("x-answer-location", "/items/2"),
        ("x-answer-content-location", "/items/3"),
    ];
    let (status, _, _) = call(&app, request("PATCH", "/items/1", &answer)).await;
    let took = started.elapsed();
    server.resume();
    assert_eq!(status, StatusCode::CREATED, "the application's answer");
    let replayed = eventually(Duration::from_secs(10), || {
        let (app, version) = (app.clone(), version.clone());
        async move { !stale(&app, &version, "/items/1", &[]).await }
    })
    .await;
    assert!(replayed, "the removal is replayed once Redis answers");
    assert!(
        took < op_timeout * 2,
        "the write answered after {took:?}, op_timeout {op_timeout:?}"
    );
}

/// A read in flight in another process, keyed by user, whose handler ran before the write
/// and answers after it: not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_read_in_flight_for_a_user_stores_nothing() {
    let server = RedisServer::start();
    let gate = Arc::new(Gated::default());
    let by_user = |cache: &Cache| {
        layer(cache).key_by_user(|r| Some(r.headers.get("x-user-id")?.to_str().ok()?.to_owned()))
    };
    let gated = |layer: CacheLayer| -> Router {
        Router::new()
            .route("/held", any(gated_resource))
            .layer(layer)
            .with_state(gate.clone())
    };
    let here = gated(by_user(&server.cache("adv-writes-inflight").await));
    let there = gated(by_user(&server.cache("adv-writes-inflight").await));
    let user = [("x-user-id", "u1")];
    let entered = gate.entered.notified();
    let reading = tokio::spawn({
        let there = there.clone();
        async move { call(&there, request("GET", "/held", &user)).await }
    });
    entered.await;
    let (status, _, _) = call(&here, request("POST", "/held", &[])).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    gate.open.add_permits(100);
    let (_, cached, body) = reading.await.unwrap();
    assert_eq!((cached.as_deref(), body.as_str()), (Some("MISS"), "v0"));
    let (_, cached, body) = call(&there, request("GET", "/held", &user)).await;
    assert_eq!((cached.as_deref(), body.as_str()), (Some("MISS"), "v1"));
}

struct Gated {
    version: AtomicU32,
    entered: tokio::sync::Notify,
    open: tokio::sync::Semaphore,
}

impl Default for Gated {
    fn default() -> Gated {
        Gated {
            version: AtomicU32::new(0),
            entered: tokio::sync::Notify::new(),
            open: tokio::sync::Semaphore::new(0),
        }
    }
}

async fn gated_resource(
    State(gate): State<Arc<Gated>>,
    method: axum::http::Method,
) -> axum::response::Response {
    if method != axum::http::Method::GET {
        gate.version.fetch_add(1, Ordering::SeqCst);
        return StatusCode::NO_CONTENT.into_response();
    }
    let version = gate.version.load(Ordering::SeqCst);
    gate.entered.notify_one();
    let _permit = gate.open.acquire().await.unwrap();
    format!("v{version}").into_response()
}
