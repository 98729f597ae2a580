//! `http::CacheLayer` on a real axum app over real Redis: `X-Cache` and `Age`, one handler run
//! for concurrent requests to a cold URL, nothing personal stored, non-200 and `no-store` not
//! stored, `Vary`, `max-age`, the size limit, invalidation, and the handler answering with
//! Redis down.

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
use cached_redis_tests::{RedisServer, assert_no_state_left, eventually, pttl, scan_keys};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

/// How often each handler ran, and a gate the slow one waits at.
struct Handlers {
    runs: AtomicU32,
    gate: tokio::sync::Semaphore,
}

impl Default for Handlers {
    fn default() -> Handlers {
        Handlers {
            runs: AtomicU32::new(0),
            gate: tokio::sync::Semaphore::new(0),
        }
    }
}

type Shared = Arc<Handlers>;

fn app(cache: &Cache, handlers: &Shared) -> Router {
    app_with(
        CacheLayer::new(cache.clone(), Duration::from_secs(30)),
        handlers,
    )
}

fn app_with(layer: CacheLayer, handlers: &Shared) -> Router {
    Router::new()
        .route("/products", get(products))
        .route("/slow", get(slow))
        .route("/cookie", get(sets_a_cookie))
        .route("/private", get(private))
        .route("/missing", get(missing))
        .route("/lang", get(by_language))
        .route("/big", get(big))
        .route("/short", get(short_lived))
        .route("/me", get(me))
        .route("/stream", get(streaming))
        .layer(layer)
        .with_state(handlers.clone())
}

fn ran(handlers: &Handlers) -> u32 {
    handlers.runs.fetch_add(1, Ordering::SeqCst) + 1
}

async fn products(State(h): State<Shared>, request: Request<Body>) -> impl IntoResponse {
    let run = ran(&h);
    let query = request.uri().query().unwrap_or("").to_owned();
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"run":{run},"query":"{query}"}}"#),
    )
}

async fn slow(State(h): State<Shared>) -> String {
    let run = ran(&h);
    let _permit = h.gate.acquire().await.unwrap();
    format!("slow {run}")
}

async fn sets_a_cookie(State(h): State<Shared>) -> impl IntoResponse {
    (
        [(header::SET_COOKIE, "session=abc")],
        format!("run {}", ran(&h)),
    )
}

async fn private(State(h): State<Shared>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "private, max-age=60")],
        format!("run {}", ran(&h)),
    )
}

async fn missing(State(h): State<Shared>) -> impl IntoResponse {
    (StatusCode::NOT_FOUND, format!("run {}", ran(&h)))
}

async fn by_language(State(h): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    ran(&h);
    let language = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    (
        [(header::VARY, "Accept-Language")],
        format!("hello in {language}"),
    )
}

async fn big(State(h): State<Shared>) -> Vec<u8> {
    ran(&h);
    vec![b'x'; 2 << 20]
}

async fn short_lived(State(h): State<Shared>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=5")],
        format!("run {}", ran(&h)),
    )
}

async fn me(State(h): State<Shared>, headers: HeaderMap) -> String {
    ran(&h);
    let user = headers
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("nobody");
    format!("profile of {user}")
}

/// One request through the app: status, `X-Cache`, `Age` and body.
async fn call(
    app: &Router,
    request: Request<Body>,
) -> (StatusCode, Option<String>, Option<String>, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (x_cache, age) = headers_of(&response);
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        x_cache,
        age,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// `X-Cache` and `Age`.
fn headers_of(response: &axum::response::Response) -> (Option<String>, Option<String>) {
    let header = |name: &str| Some(response.headers().get(name)?.to_str().unwrap().to_owned());
    (header("x-cache"), header("age"))
}

async fn get_path(
    app: &Router,
    path: &str,
) -> (StatusCode, Option<String>, Option<String>, String) {
    call(app, Request::get(path).body(Body::empty()).unwrap()).await
}

fn with_header(path: &str, name: &str, value: &str) -> Request<Body> {
    Request::get(path)
        .header(name, value)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_then_a_hit_with_its_age_under_a_readable_key() {
    let server = RedisServer::start();
    let cache = server.cache("http-hit").await;
    let handlers = Shared::default();
    let app = app(&cache, &handlers);

    let (status, x_cache, age, body) = get_path(&app, "/products?page=2&a=1").await;
    assert_eq!(
        (status, x_cache.as_deref(), age),
        (StatusCode::OK, Some("MISS"), None)
    );
    assert_eq!(body, r#"{"run":1,"query":"page=2&a=1"}"#);
    let (_, x_cache, age, again) = get_path(&app, "/products?a=1&page=2").await;
    assert_eq!(
        x_cache.as_deref(),
        Some("HIT"),
        "the same query in another order"
    );
    assert_eq!(age.as_deref(), Some("0"));
    assert_eq!(again, body, "the stored response, not a new run");
    assert_eq!(handlers.runs.load(Ordering::SeqCst), 1);

    let mut conn = server.conn().await;
    let keys = scan_keys(&mut conn, "http-hit:*").await;
    assert_eq!(keys, ["http-hit:{http:GET:/products?a=1&page=2}"]);
    let head = Request::head("/products?a=1&page=2")
        .body(Body::empty())
        .unwrap();
    let (_, x_cache, _, _) = call(&app, head).await;
    assert_eq!(
        x_cache.as_deref(),
        Some("MISS"),
        "HEAD has entries of its own"
    );
    assert_no_state_left(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_to_a_cold_url_run_the_handler_once() {
    let server = RedisServer::start();
    let cache = server.cache("http-stampede").await;
    let handlers = Shared::default();
    let app = app(&cache, &handlers);
    let requests: Vec<_> = (0..200)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { get_path(&app, "/slow").await })
        })
        .collect();
    // Every request joined the one run before it is let go.
    let joined = eventually(Duration::from_secs(10), || async {
        cache.stats().coalesced == 199
    });
    assert!(joined.await, "{:?}", cache.stats());
    handlers.gate.add_permits(1);
    let mut hits = 0;
    for request in requests {
        let (status, x_cache, _, body) = request.await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "slow 1"));
        hits += usize::from(x_cache.as_deref() == Some("HIT"));
    }
    assert_eq!(handlers.runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        hits, 199,
        "the requests that waited were answered from the run they joined"
    );
    assert_no_state_left(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_personal_is_stored() {
    let server = RedisServer::start();
    let cache = server.cache("http-personal").await;
    let handlers = Shared::default();
    let app = app(&cache, &handlers);
    for (name, value) in [("cookie", "session=1"), ("authorization", "Bearer t")] {
        for _ in 0..2 {
            let what = format!("a request with `{name}`");
            let (_, x_cache, _, _) = call(&app, with_header("/products", name, value)).await;
            assert_eq!(x_cache, None, "{what} is not the layer's to answer");
        }
    }
    for path in ["/cookie", "/private", "/missing"] {
        for _ in 0..2 {
            let (_, x_cache, _, _) = get_path(&app, path).await;
            assert_eq!(x_cache.as_deref(), Some("MISS"), "{path} is never stored");
        }
    }
    assert_eq!(
        handlers.runs.load(Ordering::SeqCst),
        10,
        "every request ran its handler"
    );
    cache.settle().await;
    let mut conn = server.conn().await;
    assert_eq!(
        scan_keys(&mut conn, "http-personal:*").await,
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_keyed_by_user_get_their_own_entries() {
    let server = RedisServer::start();
    let cache = server.cache("http-users").await;
    let handlers = Shared::default();
    let layer = CacheLayer::new(cache.clone(), Duration::from_secs(30)).key_by_user(|request| {
        let user = request.headers.get("x-user")?;
        user.to_str().ok().map(str::to_owned)
    });
    let app = app_with(layer, &handlers);
    let as_user = |user: &str| {
        Request::get("/me")
            .header("cookie", "session=1")
            .header("x-user", user)
            .body(Body::empty())
            .unwrap()
    };
    for user in ["ada", "grace", "ada", "grace"] {
        let (_, _, _, body) = call(&app, as_user(user)).await;
        assert_eq!(body, format!("profile of {user}"));
    }
    assert_eq!(handlers.runs.load(Ordering::SeqCst), 2, "one run per user");
    let anonymous = with_header("/me", "cookie", "session=1");
    let (_, x_cache, _, _) = call(&app, anonymous).await;
    assert_eq!(x_cache, None, "credentials without a user are not cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_variant_of_a_varying_response_is_stored_apart() {
    let server = RedisServer::start();
    let cache = server.cache("http-vary").await;
    let handlers = Shared::default();
    let app = app(&cache, &handlers);
    let lang = |l: &str| with_header("/lang", "accept-language", l);
    let mut answers = Vec::new();
    for language in ["en", "en", "de", "en", "de"] {
        let (_, x_cache, _, body) = call(&app, lang(language)).await;
        assert_eq!(body, format!("hello in {language}"));
        answers.push(x_cache.unwrap());
    }
    // The first run learns that the URL varies; each variant then runs once and is stored.
    assert_eq!(answers, ["MISS", "MISS", "MISS", "HIT", "HIT"]);
    cache.settle().await;
    let mut conn = server.conn().await;
    let mut keys = scan_keys(&mut conn, "http-vary:*").await;
    keys.sort();
    assert_eq!(
        keys,
        [
            "http-vary:{http:GET:/lang|vary:accept-language=de}",
            "http-vary:{http:GET:/lang|vary:accept-language=en}",
            "http-vary:{http:GET:/lang}",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_streams_through_unstored() {
    let server = RedisServer::start();
    let cache = server.cache("http-big").await;
    let handlers = Shared::default();
    let app = app(&cache, &handlers);
    for _ in 0..2 {
        let (status, x_cache, _, body) = get_path(&app, "/big").await;
        assert_eq!((status, x_cache.as_deref()), (StatusCode::OK, Some("MISS")));
        assert_eq!(body.len(), 2 << 20, "the whole body reaches the client");
    }
    cache.settle().await;
    let mut conn = server.conn().await;
    assert_eq!(
        scan_keys(&mut conn, "http-big:*").await,
        Vec::<String>::new()
    );
    let layer = CacheLayer::new(cache.clone(), Duration::from_secs(30)).max_body(4 << 20);
    let roomy = app_with(layer, &handlers);
    get_path(&roomy, "/big").await;
    assert_eq!(
        get_path(&roomy, "/big").await.1.as_deref(),
        Some("HIT"),
        "within a larger limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_max_age_is_the_entrys_ttl() {
    let server = RedisServer::start();
    let cache = server.cache("http-max-age").await;
    let handlers = Shared::default();
    let app = app(&cache, &handlers);
    get_path(&app, "/short").await;
    cache.settle().await;
    let mut conn = server.conn().await;
    let left = pttl(&mut conn, "http-max-age:{http:GET:/short}").await;
    assert!(
        (1..=5_000).contains(&left),
        "max-age=5 under a 30 s layer: {left} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_by_url_and_by_path_prefix() {
    let server = RedisServer::start();
    let cache = server.cache("http-invalidate").await;
    let handlers = Shared::default();
    let app = app(&cache, &handlers);
    for path in ["/products?page=2", "/products?page=3", "/lang"] {
        get_path(&app, path).await;
    }
    call(&app, with_header("/lang", "accept-language", "en")).await;
    let removed = CacheLayer::invalidate(&cache, "GET", "/products?page=2").await;
    assert!(removed.unwrap());
    assert_eq!(
        get_path(&app, "/products?page=2").await.1.as_deref(),
        Some("MISS")
    );
    assert_eq!(
        get_path(&app, "/products?page=3").await.1.as_deref(),
        Some("HIT")
    );

    assert!(
        CacheLayer::invalidate(&cache, "GET", "/lang")
            .await
            .unwrap()
    );
    let mut conn = server.conn().await;
    let left = scan_keys(&mut conn, "http-invalidate:{http:GET:/lang*").await;
    assert_eq!(left, Vec::<String>::new(), "the URL's variants go with it");

    let removed = CacheLayer::invalidate_prefix(&cache, "/products")
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(
        get_path(&app, "/products?page=3").await.1.as_deref(),
        Some("MISS")
    );
    let wrong = CacheLayer::invalidate(&cache, "GET", "no path").await;
    assert!(
        matches!(wrong, Err(cached_redis::Error::InvalidConfig(_))),
        "{wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_handler_answers() {
    let mut server = RedisServer::start();
    let cache = server
        .cache_builder("http-down")
        .op_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let handlers = Shared::default();
    let app = app(&cache, &handlers);
    server.kill();
    for run in 1..=3 {
        let (status, x_cache, _, body) = get_path(&app, "/products").await;
        assert_eq!((status, x_cache.as_deref()), (StatusCode::OK, Some("MISS")));
        assert_eq!(body, format!(r#"{{"run":{run},"query":""}}"#));
    }
    assert!(cache.stats().fallbacks >= 1, "{:?}", cache.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_has_its_own_entries() {
    let server = RedisServer::start();
    let cache = server.cache("http-hosts").await;
    let handlers = Shared::default();
    let app = app(&cache, &handlers);
    let at = |host: &str| with_header("/products", "host", host);
    let (_, _, _, a) = call(&app, at("a.example.com")).await;
    let (_, x_cache, _, b) = call(&app, at("b.example.com")).await;
    assert_eq!(
        x_cache.as_deref(),
        Some("MISS"),
        "another tenant's response is not served"
    );
    assert_ne!(a, b);
    assert_eq!(
        call(&app, at("a.example.com")).await.1.as_deref(),
        Some("HIT")
    );
    assert!(
        CacheLayer::invalidate(&cache, "GET", "/products")
            .await
            .unwrap()
    );
    cache.settle().await;
    let mut conn = server.conn().await;
    assert_eq!(
        scan_keys(&mut conn, "http-hosts:*").await,
        Vec::<String>::new(),
        "every host's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_and_range_requests_go_to_the_handler() {
    let server = RedisServer::start();
    let cache = server.cache("http-conditional").await;
    let handlers = Shared::default();
    let app = app(&cache, &handlers);
    for (name, value) in [
        ("if-match", "\"v1\""),
        ("if-unmodified-since", "Wed, 21 Oct 2026 07:28:00 GMT"),
        ("if-range", "\"v1\""),
        ("range", "bytes=0-3"),
    ] {
        let (_, x_cache, _, _) = call(&app, with_header("/products", name, value)).await;
        assert_eq!(
            x_cache, None,
            "a request with `{name}` is the handler's to answer"
        );
    }
    assert_eq!(cache.stats().misses, 0, "{:?}", cache.stats());
}

/// A streamed body the layer does not store: its first chunk now, the second once the gate
/// opens.
async fn streaming(State(h): State<Shared>) -> impl IntoResponse {
    ran(&h);
    let chunks = futures_util::stream::unfold(0, move |n| {
        let h = h.clone();
        async move {
            match n {
                0 => Some((Ok::<_, std::io::Error>("first "), 1)),
                1 => {
                    let _permit = h.gate.acquire().await.unwrap();
                    Some((Ok("second"), 2))
                }
                _ => None,
            }
        }
    });
    ([(header::SET_COOKIE, "s=1")], Body::from_stream(chunks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_never_stored_streams_as_it_is_written() {
    let server = RedisServer::start();
    let cache = server.cache("http-stream").await;
    let handlers = Shared::default();
    let app = app(&cache, &handlers);
    let response = app
        .clone()
        .oneshot(Request::get("/stream").body(Body::empty()).unwrap());
    let response = tokio::time::timeout(Duration::from_secs(10), response).await;
    let mut body = response
        .expect("the head, before the body ends")
        .unwrap()
        .into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame()).await;
    let first = first
        .expect("the first chunk, before the body ends")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first ");
    handlers.gate.add_permits(1);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");

    // Known not to be stored, the next request skips the cache's lease and counts no miss.
    let misses = cache.stats().misses;
    handlers.gate.add_permits(1);
    let (_, x_cache, _, body) = get_path(&app, "/stream").await;
    assert_eq!(
        (x_cache.as_deref(), body.as_str()),
        (Some("MISS"), "first second")
    );
    assert_eq!(cache.stats().misses, misses, "{:?}", cache.stats());
}
