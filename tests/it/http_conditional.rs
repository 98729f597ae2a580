//! Conditional requests answered by `http::CacheLayer` (RFC 9110 §13): a `GET` with
//! `If-None-Match` or `If-Modified-Since` gets `304 Not Modified` from the stored response
//! when its validators match, the full `200` when they do not, and on a miss the handler runs
//! without the conditions so that what it answers can be stored; `.etag()` gives stored
//! responses a strong `ETag`. On a real axum app over real Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use cached_redis::Cache;
use cached_redis::http::CacheLayer;
use cached_redis_tests::RedisServer;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

/// How often the handlers ran, and whether one was ever given a validator.
#[derive(Default)]
struct Seen {
    runs: AtomicU32,
    validators: AtomicU32,
}

type Shared = Arc<Seen>;

fn app(layer: CacheLayer, seen: &Shared) -> Router {
    Router::new()
        .route("/tagged", get(tagged))
        .route("/dated", get(dated))
        .route("/plain", get(plain))
        .route("/private", get(private))
        .layer(layer)
        .with_state(seen.clone())
}

fn ran(seen: &Seen, headers: &HeaderMap) {
    seen.runs.fetch_add(1, Ordering::SeqCst);
    if headers.contains_key(header::IF_NONE_MATCH)
        || headers.contains_key(header::IF_MODIFIED_SINCE)
    {
        seen.validators.fetch_add(1, Ordering::SeqCst);
    }
}

async fn tagged(State(seen): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    ran(&seen, &headers);
    (
        [
            (header::ETAG, "\"v1\""),
            (header::CACHE_CONTROL, "max-age=60"),
            (header::CONTENT_TYPE, "text/plain"),
        ],
        "the tagged body",
    )
}

async fn dated(State(seen): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    ran(&seen, &headers);
    (
        [(header::LAST_MODIFIED, "Wed, 21 Oct 2026 07:28:00 GMT")],
        "the dated body",
    )
}

async fn plain(State(seen): State<Shared>, headers: HeaderMap) -> &'static str {
    ran(&seen, &headers);
    "the plain body"
}

/// Never stored: the handler answers conditions itself.
async fn private(State(seen): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    ran(&seen, &headers);
    let status = match headers.get(header::IF_NONE_MATCH) {
        Some(tag) if tag == "\"p\"" => StatusCode::NOT_MODIFIED,
        _ => StatusCode::OK,
    };
    (
        status,
        [(header::CACHE_CONTROL, "private"), (header::ETAG, "\"p\"")],
        "private body",
    )
}

/// Status, `X-Cache`, `ETag` and body of one `GET` of `path` with these request headers.
async fn get_with(
    app: &Router,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>, Option<String>, String) {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let header = |name: &str| Some(response.headers().get(name)?.to_str().unwrap().to_owned());
    let (status, x_cache, etag) = (response.status(), header("x-cache"), header("etag"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        x_cache,
        etag,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn layer(cache: &Cache) -> CacheLayer {
    CacheLayer::new(cache.clone(), Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_gets_a_304_from_the_stored_response() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let app = app(layer(&server.cache("http-cond-etag").await), &seen);
    let full = get_with(&app, "/tagged", &[]).await;
    assert_eq!(full.0, StatusCode::OK);
    for tag in ["\"v1\"", "W/\"v1\"", "\"v0\", \"v1\"", "*"] {
        let (status, x_cache, etag, body) =
            get_with(&app, "/tagged", &[("if-none-match", tag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{tag}");
        assert_eq!(x_cache.as_deref(), Some("HIT"));
        assert_eq!(etag.as_deref(), Some("\"v1\""), "a 304 carries the ETag");
        assert_eq!(body, "", "and no body");
    }
    for tag in ["\"v2\"", "v1", "\"v1"] {
        let (status, x_cache, _, body) = get_with(&app, "/tagged", &[("if-none-match", tag)]).await;
        assert_eq!(
            (status, x_cache.as_deref()),
            (StatusCode::OK, Some("HIT")),
            "{tag}"
        );
        assert_eq!(body, "the tagged body");
    }
    assert_eq!(
        seen.runs.load(Ordering::SeqCst),
        1,
        "every answer came from the entry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_modified_since_compares_with_last_modified() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let app = app(layer(&server.cache("http-cond-date").await), &seen);
    get_with(&app, "/dated", &[]).await;
    let at_or_after = [
        "Wed, 21 Oct 2026 07:28:00 GMT",
        "Thu, 22 Oct 2026 00:00:00 GMT",
    ];
    for since in at_or_after {
        let answer = get_with(&app, "/dated", &[("if-modified-since", since)]).await;
        assert_eq!(answer.0, StatusCode::NOT_MODIFIED, "{since}");
    }
    for since in ["Tue, 20 Oct 2026 00:00:00 GMT", "not a date"] {
        let answer = get_with(&app, "/dated", &[("if-modified-since", since)]).await;
        assert_eq!(answer.0, StatusCode::OK, "{since}");
    }
    // If-None-Match wins over If-Modified-Since; a response without a validator is never a 304.
    let both = [
        ("if-none-match", "\"other\""),
        ("if-modified-since", "Thu, 22 Oct 2026 00:00:00 GMT"),
    ];
    assert_eq!(get_with(&app, "/dated", &both).await.0, StatusCode::OK);
    get_with(&app, "/plain", &[]).await;
    let answer = get_with(&app, "/plain", &[("if-none-match", "*")]).await;
    assert_eq!(answer.0, StatusCode::OK, "nothing to match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_miss_stores_the_full_response_and_answers_304() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let app = app(layer(&server.cache("http-cond-miss").await), &seen);
    let (status, x_cache, _, _) = get_with(&app, "/tagged", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(
        (status, x_cache.as_deref()),
        (StatusCode::NOT_MODIFIED, Some("MISS"))
    );
    assert_eq!(
        seen.validators.load(Ordering::SeqCst),
        0,
        "the handler answered in full"
    );
    let (status, x_cache, _, body) = get_with(&app, "/tagged", &[]).await;
    assert_eq!((status, x_cache.as_deref()), (StatusCode::OK, Some("HIT")));
    assert_eq!(body, "the tagged body", "the full response was stored");
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_the_layer_does_not_store_gets_the_conditions_back() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let app = app(layer(&server.cache("http-cond-private").await), &seen);
    get_with(&app, "/private", &[]).await;
    let (status, _, _, _) = get_with(&app, "/private", &[("if-none-match", "\"p\"")]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED, "the handler's own 304");
    assert_eq!(
        seen.validators.load(Ordering::SeqCst),
        1,
        "the handler saw the condition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_gives_stored_responses_a_strong_tag_and_keeps_the_handlers() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let cache = server.cache("http-cond-made").await;
    let app = app(layer(&cache).etag(), &seen);
    let (_, _, made, body) = get_with(&app, "/plain", &[]).await;
    let made = made.expect("an ETag was added");
    assert!(
        made.starts_with('"') && made.ends_with('"') && made.len() == 34,
        "{made}"
    );
    assert_eq!(body, "the plain body");
    let (_, x_cache, again, _) = get_with(&app, "/plain", &[]).await;
    assert_eq!(
        (x_cache.as_deref(), again.as_deref()),
        (Some("HIT"), Some(made.as_str()))
    );
    let answer = get_with(&app, "/plain", &[("if-none-match", &made)]).await;
    assert_eq!(answer.0, StatusCode::NOT_MODIFIED);
    let (_, _, kept, _) = get_with(&app, "/tagged", &[]).await;
    assert_eq!(
        kept.as_deref(),
        Some("\"v1\""),
        "the handler's own ETag is kept"
    );
    let (_, _, none, _) = get_with(&app, "/private", &[]).await;
    assert_eq!(
        none.as_deref(),
        Some("\"p\""),
        "a response not stored is untouched"
    );
    // Without `.etag()`, no tag is made up.
    let bare = app_without_tags(&server, &seen).await;
    let (_, _, untagged, _) = get_with(&bare, "/plain", &[]).await;
    assert_eq!(untagged, None);
}

async fn app_without_tags(server: &RedisServer, seen: &Shared) -> Router {
    app(layer(&server.cache("http-cond-bare").await), seen)
}
