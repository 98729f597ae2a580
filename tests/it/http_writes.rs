//! Unsafe methods invalidate (RFC 9111 §4.4): a `POST`, `PUT`, `PATCH` or `DELETE` answered
//! with a 2xx or 3xx through `http::CacheLayer` removes the stored responses to its URL (every
//! variant, in every process) and to the same host's URLs its `Location` and
//! `Content-Location` name; an error status removes nothing; `invalidate_on_writes(false)`
//! turns it off. On a real axum app over real Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use cached_redis::Cache;
use cached_redis::http::CacheLayer;
use cached_redis_tests::RedisServer;

#[path = "support/http_call.rs"]
mod http_call;
use http_call::call;

/// The items' versions, bumped by every write, and a gate a read can be held at.
struct Items {
    version: AtomicU32,
    held: tokio::sync::Semaphore,
    entered: tokio::sync::Notify,
}

impl Default for Items {
    fn default() -> Items {
        Items {
            version: AtomicU32::new(0),
            held: tokio::sync::Semaphore::new(0),
            entered: tokio::sync::Notify::new(),
        }
    }
}

type Shared = Arc<Items>;

fn app(layer: CacheLayer, items: &Shared) -> Router {
    Router::new()
        .route(
            "/items/{id}",
            get(read).post(write).put(write).patch(write).delete(write),
        )
        .route("/items/{id}/fail", axum::routing::post(fail))
        .route("/items/{id}/moved", axum::routing::post(moved))
        .route("/held/{id}", get(held_read).post(write))
        .layer(layer)
        .with_state(items.clone())
}

fn layer(cache: &Cache) -> CacheLayer {
    CacheLayer::new(cache.clone(), Duration::from_secs(60))
}

async fn read(State(items): State<Shared>, Path(id): Path<u32>) -> String {
    format!("item {id} v{}", items.version.load(Ordering::SeqCst))
}

async fn held_read(State(items): State<Shared>, Path(id): Path<u32>) -> String {
    let version = items.version.load(Ordering::SeqCst);
    items.entered.notify_one();
    let _permit = items.held.acquire().await.unwrap();
    format!("held {id} v{version}")
}

async fn write(State(items): State<Shared>) -> StatusCode {
    items.version.fetch_add(1, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

async fn fail(State(items): State<Shared>) -> StatusCode {
    items.version.fetch_add(1, Ordering::SeqCst);
    StatusCode::INTERNAL_SERVER_ERROR
}

/// A write whose answer names two other items: one on this host, one on another.
async fn moved(State(items): State<Shared>) -> impl IntoResponse {
    items.version.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, "/items/2"),
            (header::CONTENT_LOCATION, "http://elsewhere.example/items/3"),
        ],
    )
}

fn request(method: &str, path: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "shop.example")
        .body(Body::empty())
        .unwrap()
}

/// `X-Cache` of a `GET` of `path`.
async fn x_cache(app: &Router, path: &str) -> Option<String> {
    call(app, request("GET", path)).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_write_removes_its_urls_entries_in_every_process() {
    let server = RedisServer::start();
    let items = Shared::default();
    // Two processes: two caches and two apps on one Redis.
    let (here, there) = (
        app(layer(&server.cache("http-writes").await), &items),
        app(layer(&server.cache("http-writes").await), &items),
    );
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        x_cache(&there, "/items/1").await;
        assert_eq!(x_cache(&there, "/items/1").await.as_deref(), Some("HIT"));
        // HEAD is the same resource.
        call(&there, request("HEAD", "/items/1")).await;
        let answer = call(&here, request(method, "/items/1")).await;
        assert_eq!(answer.0, StatusCode::NO_CONTENT, "{method}");
        let (_, cached, body) = call(&there, request("GET", "/items/1")).await;
        assert_eq!(cached.as_deref(), Some("MISS"), "after {method}");
        let version = items.version.load(Ordering::SeqCst);
        assert_eq!(body, format!("item 1 v{version}"), "the write's result");
        let head = call(&there, request("HEAD", "/items/1")).await;
        assert_eq!(head.1.as_deref(), Some("MISS"), "HEAD after {method}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_status_removes_nothing_and_the_switch_turns_it_off() {
    let server = RedisServer::start();
    let cache = server.cache("http-writes-off").await;
    let items = Shared::default();
    let on = app(layer(&cache), &items);
    x_cache(&on, "/items/1").await;
    let (status, _, _) = call(&on, request("POST", "/items/1/fail")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(x_cache(&on, "/items/1").await.as_deref(), Some("HIT"));

    let off = app(layer(&cache).invalidate_on_writes(false), &items);
    call(&off, request("POST", "/items/1")).await;
    assert_eq!(
        x_cache(&off, "/items/1").await.as_deref(),
        Some("HIT"),
        "left to the service"
    );
    call(&on, request("POST", "/items/1")).await;
    assert_eq!(x_cache(&off, "/items/1").await.as_deref(), Some("MISS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_and_content_location_on_the_same_host_are_removed_too() {
    let server = RedisServer::start();
    let cache = server.cache("http-writes-location").await;
    let items = Shared::default();
    let app = app(layer(&cache), &items);
    for path in ["/items/1", "/items/2", "/items/3"] {
        x_cache(&app, path).await;
        assert_eq!(x_cache(&app, path).await.as_deref(), Some("HIT"));
    }
    let (status, _, _) = call(&app, request("POST", "/items/1/moved")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        x_cache(&app, "/items/2").await.as_deref(),
        Some("MISS"),
        "Location, same host"
    );
    assert_eq!(
        x_cache(&app, "/items/3").await.as_deref(),
        Some("HIT"),
        "Content-Location names another host: not this cache's to remove"
    );
    assert_eq!(x_cache(&app, "/items/1").await.as_deref(), Some("HIT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_variant_of_the_url_goes() {
    let server = RedisServer::start();
    let cache = server.cache("http-writes-variants").await;
    let items = Shared::default();
    let app = app(layer(&cache), &items);
    let on_host = |method: &str, host: &str| {
        Request::builder()
            .method(method)
            .uri("/items/1")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };
    for host in ["a.example", "b.example"] {
        call(&app, on_host("GET", host)).await;
        assert_eq!(
            call(&app, on_host("GET", host)).await.1.as_deref(),
            Some("HIT")
        );
    }
    call(&app, on_host("POST", "a.example")).await;
    for host in ["a.example", "b.example"] {
        let (_, cached, body) = call(&app, on_host("GET", host)).await;
        assert_eq!(cached.as_deref(), Some("MISS"), "{host}");
        assert_eq!(body, "item 1 v1");
    }
}

/// A read whose handler ran before the write and answers after it: its response may go to
/// its own caller, but is not stored (the write revoked its lease), so the next read gets the
/// write's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_in_flight_during_a_write_stores_nothing() {
    let server = RedisServer::start();
    let cache = server.cache("http-writes-race").await;
    let items = Shared::default();
    let app = app(layer(&cache), &items);
    let entered = items.entered.notified();
    let reading = tokio::spawn({
        let app = app.clone();
        async move { call(&app, request("GET", "/held/1")).await }
    });
    entered.await;
    let (status, _, _) = call(&app, request("POST", "/held/1")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    items.held.add_permits(10);
    let (_, cached, body) = reading.await.unwrap();
    assert_eq!(
        (cached.as_deref(), body.as_str()),
        (Some("MISS"), "held 1 v0")
    );
    cache.settle().await;
    let (_, cached, body) = call(&app, request("GET", "/held/1")).await;
    assert_eq!(
        cached.as_deref(),
        Some("MISS"),
        "the read before the write was not stored"
    );
    assert_eq!(body, "held 1 v1");
}
