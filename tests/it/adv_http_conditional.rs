//! Adversarial tests of the conditional requests `http::CacheLayer` answers itself (RFC 9110
//! §13): a `304` that names a response the client does not hold, carries less than the `200`
//! it stands for, or comes from another user's or variant's entry; `.etag()`'s tags. Tests
//! named `bug_*` show a defect and fail; the others are attacks the layer held. Real axum
//! apps over a real redis-server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse};
use axum::routing::get;
use cached_redis::Cache;
use cached_redis::http::CacheLayer;
use cached_redis_tests::{RedisServer, eventually};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

struct Seen {
    runs: AtomicU32,
    /// Runs that were given `If-None-Match` or `If-Modified-Since`.
    validators: AtomicU32,
    gate: tokio::sync::Semaphore,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen {
            runs: AtomicU32::new(0),
            validators: AtomicU32::new(0),
            gate: tokio::sync::Semaphore::new(0),
        }
    }
}

type Shared = Arc<Seen>;

fn ran(seen: &Seen, headers: &HeaderMap) {
    seen.runs.fetch_add(1, Ordering::SeqCst);
    if headers.contains_key(header::IF_NONE_MATCH)
        || headers.contains_key(header::IF_MODIFIED_SINCE)
    {
        seen.validators.fetch_add(1, Ordering::SeqCst);
    }
}

fn routes(seen: &Shared) -> Router<Shared> {
    let _ = seen;
    Router::new()
        .route("/v2", get(v2))
        .route("/lines", get(lines))
        .route("/cookie", get(cookie))
        .route("/lang", get(lang))
        .route("/me", get(me))
        .route("/always304", get(always_304))
        .route("/slow", get(slow))
        .route("/body/{n}", get(body_n))
        .route("/future", get(future))
}

fn app(layer: CacheLayer, seen: &Shared) -> Router {
    routes(seen).layer(layer).with_state(seen.clone())
}

/// The version the client does not hold: `"v2"`.
async fn v2(State(seen): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    ran(&seen, &headers);
    ([(header::ETAG, "\"v2\"")], "version two")
}

/// A response with two `Vary` lines and two `Cache-Control` lines.
async fn lines(State(seen): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    ran(&seen, &headers);
    (
        AppendHeaders([
            (header::ETAG, "\"l\""),
            (header::VARY, "accept-encoding"),
            (header::VARY, "accept-language"),
            (header::CACHE_CONTROL, "public"),
            (header::CACHE_CONTROL, "max-age=0, s-maxage=60"),
        ]),
        "lines",
    )
}

/// A page that sets a cookie (a session layer's, a rotated token): never stored.
async fn cookie(State(seen): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    ran(&seen, &headers);
    let status = match headers.get(header::IF_NONE_MATCH) {
        Some(tag) if tag == "\"c\"" => StatusCode::NOT_MODIFIED,
        _ => StatusCode::OK,
    };
    (
        status,
        [
            (header::ETAG, "\"c\""),
            (header::SET_COOKIE, "session=rotated"),
        ],
        "cookie page",
    )
}

/// Varies on `Accept-Language`, each language with its own tag.
async fn lang(State(seen): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    ran(&seen, &headers);
    let lang = headers
        .get(header::ACCEPT_LANGUAGE)
        .map_or("en", |v| if v == "de" { "de" } else { "en" });
    (
        [
            (header::VARY, "accept-language".to_owned()),
            (header::ETAG, format!("\"{lang}\"")),
            (
                header::LAST_MODIFIED,
                "Wed, 21 Oct 2026 07:28:00 GMT".into(),
            ),
        ],
        format!("page in {lang}"),
    )
}

/// Per user, tagged by user.
async fn me(State(seen): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    ran(&seen, &headers);
    let user = headers
        .get("x-user-id")
        .map_or("anon".to_owned(), |u| u.to_str().unwrap().to_owned());
    (
        [(header::ETAG, format!("\"{user}\""))],
        format!("for {user}"),
    )
}

/// A handler that always answers `304` (a misconfigured proxy in front of a backend, say).
async fn always_304(State(seen): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    ran(&seen, &headers);
    (StatusCode::NOT_MODIFIED, [(header::ETAG, "\"x\"")])
}

/// Waits at the gate: the run requests join.
async fn slow(State(seen): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    ran(&seen, &headers);
    let _permit = seen.gate.acquire().await.unwrap();
    ([(header::ETAG, "\"s\"")], "slow body")
}

/// A body of `n` bytes, no tag of its own.
async fn body_n(
    State(seen): State<Shared>,
    axum::extract::Path(n): axum::extract::Path<usize>,
    headers: HeaderMap,
) -> impl IntoResponse {
    ran(&seen, &headers);
    "x".repeat(n)
}

/// `Last-Modified` far in the future.
async fn future(State(seen): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    ran(&seen, &headers);
    (
        [(header::LAST_MODIFIED, "Fri, 01 Jan 2100 00:00:00 GMT")],
        "from the future",
    )
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        Some(self.headers.get(name)?.to_str().unwrap())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        let values = self.headers.get_all(name).iter();
        values.map(|v| v.to_str().unwrap()).collect()
    }
}

async fn send(app: &Router, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get_with(app: &Router, path: &str, headers: &[(&str, &str)]) -> Answer {
    send(app, "GET", path, headers).await
}

fn layer(cache: &Cache) -> CacheLayer {
    CacheLayer::new(cache.clone(), Duration::from_secs(60))
}

/// `"a,*,b"` is one entity tag (`,` and `*` are `etagc`): a client that holds the response
/// tagged so is not holding `"v2"`. The layer splits `If-None-Match` on every comma, reads the
/// `*` between them as the wildcard, and answers `304`: the client keeps its stale copy.
// Failed on 0fc87d5 (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_comma_inside_an_entity_tag_makes_a_wildcard() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let app = app(layer(&server.cache("adv-cond-comma").await), &seen);
    assert_eq!(get_with(&app, "/v2", &[]).await.status, StatusCode::OK);
    let held = get_with(&app, "/v2", &[("if-none-match", "\"a,*,b\"")]).await;
    assert_eq!(
        (held.status, held.body.as_str()),
        (StatusCode::OK, "version two"),
        "the client holds \"a,*,b\", not \"v2\": it must get the new version"
    );
}

/// A `304` updates the headers of the copy a cache in front holds (RFC 9111 §4.3.4: every
/// line of a header it carries replaces that header's lines). The layer keeps only the first
/// line of each header: the cache in front loses `Vary: accept-language` (and serves one
/// language to everyone) and `max-age=0` (and serves its copy without asking again).
// Failed on 0fc87d5 (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_304_keeps_only_the_first_line_of_each_header() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let app = app(layer(&server.cache("adv-cond-lines").await), &seen);
    let full = get_with(&app, "/lines", &[]).await;
    assert_eq!(full.all("vary").len(), 2, "the handler's two lines");
    for stage in ["miss", "hit"] {
        let path = if stage == "miss" {
            "/lines?m"
        } else {
            "/lines"
        };
        let answer = get_with(&app, path, &[("if-none-match", "\"l\"")]).await;
        assert_eq!(answer.status, StatusCode::NOT_MODIFIED, "{stage}");
        assert_eq!(
            (answer.all("vary"), answer.all("cache-control")),
            (
                vec!["accept-encoding", "accept-language"],
                vec!["public", "max-age=0, s-maxage=60"]
            ),
            "{stage}: the 304 carries every line of the 200's Vary and Cache-Control"
        );
    }
}

/// A first request with a matching `If-None-Match` to a page that sets a cookie: the layer
/// does not know yet that it will not store it, runs the handler without the condition, and
/// turns the `200` into a `304` of its own, dropping `Set-Cookie`. The handler, given the
/// condition (as it is from the second request on), answers its `304` with the cookie.
// Failed on 0fc87d5 (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_304_the_layer_makes_of_a_response_it_does_not_store_drops_set_cookie() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let app = app(layer(&server.cache("adv-cond-cookie").await), &seen);
    let mut cookies = Vec::new();
    for _ in 0..2 {
        let answer = get_with(&app, "/cookie", &[("if-none-match", "\"c\"")]).await;
        assert_eq!(answer.status, StatusCode::NOT_MODIFIED);
        cookies.push(answer.header("set-cookie").map(str::to_owned));
    }
    assert_eq!(
        cookies,
        [
            Some("session=rotated".to_owned()),
            Some("session=rotated".to_owned())
        ],
        "every answer carries the cookie the handler set (the first is the layer's 304, the \
         second the handler's own)"
    );
}

/// `.etag()` tags what the layer stores with a hash of the body it read. A `HEAD` through a
/// layer outside the router reads an empty body (the router stripped it), so every `HEAD`
/// response of every URL gets the same strong tag, unlike its `GET` (RFC 9110 §9.3.2: the same
/// header fields as the `GET`).
// Failed on 0fc87d5 (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_etag_on_head_is_the_hash_of_the_empty_body() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let layer = layer(&server.cache("adv-cond-head").await).etag();
    let around = tower::Layer::layer(&layer, routes(&seen).with_state(seen.clone()));
    let app = Router::new().fallback_service(around);
    let get_5 = send(&app, "GET", "/body/5", &[]).await;
    let head_5 = send(&app, "HEAD", "/body/5", &[]).await;
    let head_7 = send(&app, "HEAD", "/body/7", &[]).await;
    let tags = [&get_5, &head_5, &head_7].map(|a| a.header("etag").map(str::to_owned));
    // The fix: a `HEAD` whose body was stripped before the layer is not tagged (the layer
    // cannot know its `GET`'s body); under `Router::layer` it is, with its `GET`'s tag
    // (`etag_is_the_same_everywhere_and_only_on_what_is_stored`).
    assert!(tags[0].is_some(), "{tags:?}");
    assert_eq!(
        (&tags[1], &tags[2]),
        (&None, &None),
        "no made-up tag: {tags:?}"
    );
}

/// Validators that do not name the stored response get the full `200`: another tag, `w/`
/// (the prefix is case-sensitive), an `If-None-Match` that does not match with an
/// `If-Modified-Since` that would, a date in an obsolete format before `Last-Modified`, a
/// second `If-Modified-Since` line, a `Last-Modified` in the future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_naming_another_response_get_the_full_200() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let app = app(layer(&server.cache("adv-cond-other").await), &seen);
    get_with(&app, "/lang", &[]).await;
    get_with(&app, "/lang", &[]).await;
    let cases: [&[(&str, &str)]; 7] = [
        &[("if-none-match", "\"de\"")],
        &[("if-none-match", "w/\"en\"")],
        &[("if-none-match", "\"en")],
        &[
            ("if-none-match", "\"de\""),
            ("if-modified-since", "Thu, 22 Oct 2026 00:00:00 GMT"),
        ],
        &[("if-modified-since", "Tuesday, 20-Oct-26 07:28:00 GMT")],
        &[("if-modified-since", "Tue Oct 20 07:28:00 2026")],
        &[
            ("if-modified-since", "Tue, 20 Oct 2026 07:28:00 GMT"),
            ("if-modified-since", "Thu, 22 Oct 2026 00:00:00 GMT"),
        ],
    ];
    for case in cases {
        let answer = get_with(&app, "/lang", case).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "page in en"),
            "{case:?}"
        );
    }
    let matching: [&[(&str, &str)]; 4] = [
        &[("if-none-match", "\"x\", W/\"en\"")],
        &[("if-none-match", "\"x\""), ("if-none-match", "\"en\"")],
        &[("if-modified-since", "Wednesday, 21-Oct-26 07:28:00 GMT")],
        &[("if-modified-since", "Wed Oct 21 07:28:00 2026")],
    ];
    for case in matching {
        let answer = get_with(&app, "/lang", case).await;
        assert_eq!(answer.status, StatusCode::NOT_MODIFIED, "{case:?}");
        assert_eq!(answer.body, "");
    }
    get_with(&app, "/future", &[]).await;
    let now = httpdate_now();
    let answer = get_with(&app, "/future", &[("if-modified-since", &now)]).await;
    assert_eq!(answer.status, StatusCode::OK, "modified after {now}");
}

fn httpdate_now() -> String {
    // A fixed date after every test's Last-Modified but before 2100.
    "Mon, 01 Jan 2080 00:00:00 GMT".to_owned()
}

/// A `304` is answered from the request's own variant: a client holding the English page's tag
/// asking in German gets the German page in full, from the German variant, hit or miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_comes_from_the_requests_own_variant() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let app = app(layer(&server.cache("adv-cond-vary").await), &seen);
    for _ in 0..2 {
        let en = get_with(&app, "/lang", &[("if-none-match", "\"en\"")]).await;
        assert_eq!(en.status, StatusCode::NOT_MODIFIED);
        let de = get_with(
            &app,
            "/lang",
            &[("accept-language", "de"), ("if-none-match", "\"en\"")],
        )
        .await;
        assert_eq!(
            (de.status, de.body.as_str()),
            (StatusCode::OK, "page in de")
        );
        assert_eq!(de.header("etag"), Some("\"de\""));
        let de = get_with(
            &app,
            "/lang",
            &[("accept-language", "de"), ("if-none-match", "\"de\"")],
        )
        .await;
        assert_eq!(de.status, StatusCode::NOT_MODIFIED);
        assert_eq!(de.header("vary"), Some("accept-language"));
    }
    assert_eq!(seen.validators.load(Ordering::SeqCst), 0);
}

/// With `key_by_user`, one user's tag never gets a `304` from another's entry; without it, a
/// request with credentials reaches the handler with its conditions, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_never_comes_from_another_users_entry() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let by_user = layer(&server.cache("adv-cond-user").await)
        .key_by_user(|parts| Some(parts.headers.get("x-user-id")?.to_str().ok()?.to_owned()));
    let app = app(by_user, &seen);
    let alice = [("x-user-id", "alice")];
    get_with(&app, "/me", &alice).await;
    let mallory = [("x-user-id", "mallory"), ("if-none-match", "\"alice\"")];
    for _ in 0..2 {
        let answer = get_with(&app, "/me", &mallory).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "for mallory")
        );
    }
    let alice_again = [("x-user-id", "alice"), ("if-none-match", "\"alice\"")];
    assert_eq!(
        get_with(&app, "/me", &alice_again).await.status,
        StatusCode::NOT_MODIFIED
    );
    // No key_by_user: the credential sends it through, conditions and all.
    let plain = app_plain(&server, &seen, "adv-cond-cred").await;
    let before = seen.validators.load(Ordering::SeqCst);
    let answer = get_with(
        &plain,
        "/me",
        &[("authorization", "Bearer a"), ("if-none-match", "\"x\"")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-cache"), None, "not the layer's");
    assert_eq!(seen.validators.load(Ordering::SeqCst), before + 1);
}

async fn app_plain(server: &RedisServer, seen: &Shared, namespace: &str) -> Router {
    app(layer(&server.cache(namespace).await), seen)
}

/// A handler that answers `304` to a request without conditions: the `304` is never stored,
/// so a later request is not answered a body-less `304` from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_own_304_is_never_stored() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let cache = server.cache("adv-cond-304").await;
    let app = app(layer(&cache), &seen);
    for _ in 0..3 {
        let answer = get_with(&app, "/always304", &[("if-none-match", "\"x\"")]).await;
        assert_eq!(answer.status, StatusCode::NOT_MODIFIED);
        assert_ne!(answer.header("x-cache"), Some("HIT"));
    }
    assert_eq!(seen.runs.load(Ordering::SeqCst), 3);
    // The lease's release and the removal run after the answer: look once they are done.
    cache.settle().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut server.conn().await)
        .await
        .unwrap();
    assert!(
        keys.iter().all(|k| !k.contains("always304")),
        "stored: {keys:?}"
    );
}

/// Requests that join a conditional miss each get their own answer from the full `200` the
/// leader's run stored: the one without conditions the body, the matching one a `304`, the one
/// with another tag the body; the leader its `304`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_of_a_conditional_miss_get_their_own_answers() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let cache = server.cache("adv-cond-join").await;
    let app = app(layer(&cache), &seen);
    let spawn = |headers: Vec<(&'static str, &'static str)>| {
        let app = app.clone();
        tokio::spawn(async move { get_with(&app, "/slow", &headers).await })
    };
    let leader = spawn(vec![("if-none-match", "\"s\"")]);
    let started = eventually(Duration::from_secs(10), || async {
        seen.runs.load(Ordering::SeqCst) == 1
    });
    assert!(started.await);
    let plain = spawn(vec![]);
    let matching = spawn(vec![("if-none-match", "W/\"s\"")]);
    let other = spawn(vec![("if-none-match", "\"t\"")]);
    let joined = eventually(Duration::from_secs(10), || async {
        cache.stats().coalesced == 3
    });
    assert!(joined.await, "{:?}", cache.stats());
    seen.gate.add_permits(1);
    let leader = leader.await.unwrap();
    assert_eq!(
        (leader.status, leader.body.as_str()),
        (StatusCode::NOT_MODIFIED, "")
    );
    let plain = plain.await.unwrap();
    assert_eq!(
        (plain.status, plain.body.as_str()),
        (StatusCode::OK, "slow body")
    );
    let matching = matching.await.unwrap();
    assert_eq!(
        (matching.status, matching.body.as_str()),
        (StatusCode::NOT_MODIFIED, "")
    );
    let other = other.await.unwrap();
    assert_eq!(
        (other.status, other.body.as_str()),
        (StatusCode::OK, "slow body")
    );
    assert_eq!(seen.runs.load(Ordering::SeqCst), 1);
    assert_eq!(seen.validators.load(Ordering::SeqCst), 0);
}

/// `.etag()`: the same body gets the same tag in another process (another cache, another
/// namespace); two bodies get two; a body over `max_body` (streamed, not stored) gets none,
/// and a `304` of a `HEAD` carries no body (axum adds `Content-Length: 0` to every `304`,
/// the handler's own too: not the layer's doing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_is_the_same_everywhere_and_only_on_what_is_stored() {
    let server = RedisServer::start();
    let seen = Shared::default();
    let one = app(layer(&server.cache("adv-cond-tag1").await).etag(), &seen);
    let two = app(layer(&server.cache("adv-cond-tag2").await).etag(), &seen);
    let a = get_with(&one, "/body/3", &[]).await;
    let b = get_with(&two, "/body/3", &[]).await;
    let c = get_with(&one, "/body/4", &[]).await;
    assert_eq!(a.header("etag"), b.header("etag"));
    assert_ne!(a.header("etag"), c.header("etag"));
    let small = layer(&server.cache("adv-cond-tag3").await)
        .etag()
        .max_body(8);
    let small = app(small, &seen);
    let big = get_with(&small, "/body/64", &[]).await;
    assert_eq!((big.header("etag"), big.body.len()), (None, 64));
    let tag = a.header("etag").unwrap().to_owned();
    let head = send(&one, "HEAD", "/body/3", &[("if-none-match", &tag)]).await;
    let head = if head.status == StatusCode::OK {
        // HEAD has entries of its own: the second one is answered from it.
        send(&one, "HEAD", "/body/3", &[("if-none-match", &tag)]).await
    } else {
        head
    };
    assert_eq!(
        (head.status, head.body.as_str()),
        (StatusCode::NOT_MODIFIED, "")
    );
}
