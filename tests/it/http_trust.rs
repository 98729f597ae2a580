//! `http::CacheLayer` tried as an adversary would, on a real axum app over real Redis: behind
//! a gateway that forwards only an identity header, behind a reverse proxy that forwards the
//! host, with headers that are not UTF-8, queries that a handler reads differently once
//! reordered, and responses whose own headers limit or forbid storing. Each test failed before
//! the rule it checks was in place.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Request, header};
use axum::response::IntoResponse;
use axum::routing::get;
use cached_redis::Cache;
use cached_redis::http::CacheLayer;
use cached_redis_tests::{RedisServer, pttl, scan_keys};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

type Runs = Arc<AtomicU32>;

fn app(layer: CacheLayer, runs: &Runs) -> Router {
    Router::new()
        .route("/me", get(me))
        .route("/catalog", get(catalog))
        .route("/latin1-private", get(latin1_private))
        .route("/tenant", get(tenant))
        .route("/roles", get(roles))
        .route("/respond", get(respond))
        .layer(layer)
        .with_state(runs.clone())
}

fn layer(cache: &Cache) -> CacheLayer {
    CacheLayer::new(cache.clone(), Duration::from_secs(30))
}

/// The layer keyed by the user as the README sets it up: from `X-User-Id`, set by a gateway
/// after checking the token (`None` when it is not text).
fn keyed_by_user_id(cache: &Cache) -> CacheLayer {
    layer(cache).key_by_user(|request| {
        let user = request.headers.get("x-user-id")?;
        user.to_str().ok().map(str::to_owned)
    })
}

/// The user a gateway put in `X-User-Id` after checking the token.
async fn me(State(runs): State<Runs>, headers: HeaderMap) -> String {
    runs.fetch_add(1, Ordering::SeqCst);
    let user = headers.get("x-user-id");
    let user = user.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    format!("profile of {}", user.as_deref().unwrap_or("nobody"))
}

/// The host as axum-extra's `Host` reads it: `Forwarded`, `X-Forwarded-Host`, then `Host`.
async fn catalog(State(runs): State<Runs>, headers: HeaderMap) -> String {
    runs.fetch_add(1, Ordering::SeqCst);
    let forwarded = headers.get("forwarded").and_then(|f| {
        let first = f.to_str().ok()?.split(',').next()?;
        first.split(';').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name.trim().eq_ignore_ascii_case("host"))
                .then(|| value.trim().trim_matches('"').to_owned())
        })
    });
    let header = |name| Some(headers.get(name)?.to_str().ok()?.to_owned());
    let host = forwarded
        .or_else(|| header("x-forwarded-host"))
        .or_else(|| header("host"));
    format!("catalog of {}", host.unwrap_or_default())
}

async fn latin1_private(State(runs): State<Runs>) -> impl IntoResponse {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    let control = HeaderValue::from_bytes(b"private, max-age=60, x-owner=\"Jos\xe9\"").unwrap();
    ([(header::CACHE_CONTROL, control)], format!("run {run}"))
}

/// A body that tells the tenant's bytes apart, varying on them.
async fn tenant(State(runs): State<Runs>, headers: HeaderMap) -> impl IntoResponse {
    runs.fetch_add(1, Ordering::SeqCst);
    let tenant = headers.get("x-tenant").map(|v| v.as_bytes().to_vec());
    let hex: String = tenant
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    ([(header::VARY, "X-Tenant")], format!("tenant {hex}"))
}

/// The `role` values, in the order the handler reads them.
async fn roles(State(runs): State<Runs>, Query(params): Query<Vec<(String, String)>>) -> String {
    runs.fetch_add(1, Ordering::SeqCst);
    let roles: Vec<_> = params.into_iter().filter(|(n, _)| n == "role").collect();
    format!("{roles:?}")
}

/// Answers with the headers the query names (`?h=name:value&h=...`).
async fn respond(
    State(runs): State<Runs>,
    Query(params): Query<Vec<(String, String)>>,
) -> impl IntoResponse {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    let mut headers = HeaderMap::new();
    for (_, header) in params {
        let (name, value) = header.split_once(':').unwrap();
        let name = header::HeaderName::from_bytes(name.as_bytes()).unwrap();
        headers.append(name, value.parse().unwrap());
    }
    (headers, format!("run {run}"))
}

/// Asks twice for a response with each of these header lines, and asserts that neither
/// answer came from the cache.
async fn answered_twice_unstored(app: &Router, lines: &[&str]) {
    for line in lines {
        for _ in 0..2 {
            let (x_cache, _) = call(app, responding(&[line])).await;
            assert_eq!(x_cache.as_deref(), Some("MISS"), "{line} is not stored");
        }
    }
}

/// Asserts that no key of the namespace `namespace` is in Redis, once `cache`'s background
/// work (lease releases, removals) is done.
async fn assert_nothing_stored(server: &RedisServer, cache: &Cache, namespace: &str) {
    cache.settle().await;
    let mut conn = server.conn().await;
    let keys = scan_keys(&mut conn, &format!("{namespace}:*")).await;
    assert_eq!(keys, Vec::<String>::new(), "nothing stored");
}

/// `X-Cache` and the body.
async fn call(app: &Router, request: Request<Body>) -> (Option<String>, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let x_cache = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (x_cache, String::from_utf8_lossy(&body).into_owned())
}

fn request(path: &str, headers: &[(&str, &[u8])]) -> Request<Body> {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, HeaderValue::from_bytes(value).unwrap());
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_gateway_each_user_gets_only_their_own_response() {
    let server = RedisServer::start();
    let cache = server.cache("trust-gateway").await;
    let runs = Runs::default();
    // The README's setup: the user from the header the auth middleware (here, a gateway) sets.
    let layer = keyed_by_user_id(&cache);
    let app = app(layer, &runs);
    for user in ["7", "8", "7", "8"] {
        let (_, body) = call(&app, request("/me", &[("x-user-id", user.as_bytes())])).await;
        assert_eq!(
            body,
            format!("profile of {user}"),
            "no Cookie, no Authorization"
        );
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "one run per user, then hits"
    );
    let (_, body) = call(&app, request("/me", &[])).await;
    assert_eq!(
        body, "profile of nobody",
        "no user: the shared entry, not a user's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_reverse_proxy_tenants_never_share_an_entry() {
    let server = RedisServer::start();
    let cache = server.cache("trust-proxy").await;
    let runs = Runs::default();
    let app = app(layer(&cache), &runs);
    let via_proxy = |tenant: &str| {
        let tenant = tenant.as_bytes().to_vec();
        move |name: &'static str| request("/catalog", &[("host", b"app:8080"), (name, &tenant)])
    };
    for name in ["x-forwarded-host", "forwarded"] {
        let (a, b) = if name == "forwarded" {
            (
                via_proxy("for=1.2.3.4;host=a.example")(name),
                via_proxy("for=1.2.3.4;host=b.example")(name),
            )
        } else {
            (via_proxy("a.example")(name), via_proxy("b.example")(name))
        };
        assert_eq!(call(&app, a).await.1, "catalog of a.example", "{name}");
        assert_eq!(call(&app, b).await.1, "catalog of b.example", "{name}");
    }
    // A made-up forwarded host fills an entry of its own, never the real host's.
    let forged = request(
        "/catalog",
        &[("host", b"a.example"), ("x-forwarded-host", b"evil")],
    );
    assert_eq!(call(&app, forged).await.1, "catalog of evil");
    let direct = request("/catalog", &[("host", b"a.example")]);
    assert_eq!(call(&app, direct).await.1, "catalog of a.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_response_with_a_byte_that_is_not_utf8_is_never_stored() {
    let server = RedisServer::start();
    let cache = server.cache("trust-latin1").await;
    let runs = Runs::default();
    let app = app(layer(&cache), &runs);
    for run in 1..=2 {
        let (x_cache, body) = call(&app, request("/latin1-private", &[])).await;
        assert_eq!(
            (x_cache.as_deref(), body),
            (Some("MISS"), format!("run {run}"))
        );
    }
    assert_nothing_stored(&server, &cache, "trust-latin1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_values_that_differ_in_one_byte_never_share_a_variant() {
    let server = RedisServer::start();
    let cache = server.cache("trust-vary").await;
    let runs = Runs::default();
    let app = app(layer(&cache), &runs);
    let as_tenant = |t: &'static [u8]| request("/tenant", &[("x-tenant", t)]);
    for (tenant, hex) in [(&b"caf\xe9"[..], "636166e9"), (b"caf\xe8", "636166e8")] {
        for _ in 0..3 {
            let (_, body) = call(&app, as_tenant(tenant)).await;
            assert_eq!(body, format!("tenant {hex}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reordered_query_shares_an_entry_only_when_the_handler_reads_it_alike() {
    let server = RedisServer::start();
    let cache = server.cache("trust-query").await;
    let runs = Runs::default();
    let app = app(layer(&cache), &runs);
    let roles = |query: &str| request(&format!("/roles?{query}"), &[]);
    let admin_first = r#"[("role", "admin"), ("role", "user")]"#;
    assert_eq!(
        call(&app, roles("%72ole=admin&role=user")).await.1,
        admin_first
    );
    let user_first = r#"[("role", "user"), ("role", "admin")]"#;
    assert_eq!(
        call(&app, roles("role=user&%72ole=admin")).await.1,
        user_first
    );
    let (x_cache, body) = call(&app, roles("x=1&%72ole=admin&role=user")).await;
    assert_eq!(
        (x_cache.as_deref(), body.as_str()),
        (Some("MISS"), admin_first)
    );
    let (x_cache, body) = call(&app, roles("%72ole=admin&role=user&x=1")).await;
    assert_eq!(
        (x_cache.as_deref(), body.as_str()),
        (Some("HIT"), admin_first)
    );
}

/// `/respond` with these response headers.
fn responding(headers: &[&str]) -> Request<Body> {
    let query: Vec<_> = headers
        .iter()
        .map(|h| {
            format!(
                "h={}",
                h.replace(' ', "%20")
                    .replace(',', "%2C")
                    .replace('"', "%22")
            )
        })
        .collect();
    request(&format!("/respond?{}", query.join("&")), &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_is_never_stored_past_what_its_own_headers_allow() {
    let server = RedisServer::start();
    let cache = server.cache("trust-fresh").await;
    let runs = Runs::default();
    let app = app(layer(&cache), &runs);
    for headers in [
        &["expires:0"][..],
        &["expires:Thu, 01 Jan 1970 00:00:00 GMT"],
        &["cache-control:max-age=-1"],
        &["cache-control:max-age=\"60\""],
        &["cache-control:max-age=60", "age:60"],
        &["pragma:no-cache"],
        &["cdn-cache-control:private", "cache-control:max-age=600"],
        &["cdn-cache-control:no-store"],
        &["cdn-cache-control:max-age=0", "cache-control:max-age=600"],
    ] {
        for _ in 0..2 {
            let (x_cache, _) = call(&app, responding(headers)).await;
            assert_eq!(
                x_cache.as_deref(),
                Some("MISS"),
                "{headers:?} is not stored"
            );
        }
    }
    assert_nothing_stored(&server, &cache, "trust-fresh").await;

    // An origin's Age counts against its max-age, and downstream caches are told the whole age.
    let aged = || responding(&["cache-control:max-age=60", "age:50"]);
    call(&app, aged()).await;
    let response = app.clone().oneshot(aged()).await.unwrap();
    assert_eq!(response.headers()["x-cache"], "HIT");
    let age: u64 = response.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!((50..60).contains(&age), "Age {age}");
    let mut conn = server.conn().await;
    let key = scan_keys(&mut conn, "trust-fresh:*").await.remove(0);
    let left = pttl(&mut conn, &key).await;
    assert!(
        (1..=10_000).contains(&left),
        "60 s less 50 s of age: {left} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_asks_for_no_store_is_not_stored() {
    let server = RedisServer::start();
    let cache = server.cache("trust-no-store").await;
    let runs = Runs::default();
    let app = app(layer(&cache), &runs);
    let no_store = || request("/me", &[("cache-control", b"no-store")]);
    for _ in 0..2 {
        assert_eq!(
            call(&app, no_store()).await.0,
            None,
            "the handler's to answer"
        );
    }
    assert_nothing_stored(&server, &cache, "trust-no-store").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_belongs_to_one_connection_is_never_replayed() {
    let server = RedisServer::start();
    let cache = server.cache("trust-hop").await;
    let runs = Runs::default();
    let app = app(layer(&cache), &runs);
    let hop = || {
        responding(&[
            "connection:x-hop",
            "x-hop:for this connection only",
            "proxy-connection:keep-alive",
            "x-kept:yes",
        ])
    };
    call(&app, hop()).await;
    let hit = app.clone().oneshot(hop()).await.unwrap();
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(hit.headers()["x-kept"], "yes");
    for gone in ["connection", "x-hop", "proxy-connection"] {
        assert!(hit.headers().get(gone).is_none(), "{gone} replayed");
    }
}

// The second adversarial pass: each of these served one user's or tenant's response to
// another before its fix.

async fn nested_products(axum::extract::Path(tenant): axum::extract::Path<String>) -> String {
    format!("products of tenant {tenant}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_nest_the_stripped_prefix_keeps_tenants_apart() {
    let server = RedisServer::start();
    let cache = server.cache("trust-nest").await;
    let tenant_routes = Router::new()
        .route("/products", get(nested_products))
        .layer(layer(&cache));
    let app: Router = Router::new().nest("/t/{tenant}", tenant_routes);
    for tenant in ["acme", "globex", "acme"] {
        let path = format!("/t/{tenant}/products");
        let (_, body) = call(&app, request(&path, &[("host", b"shop.example")])).await;
        assert_eq!(body, format!("products of tenant {tenant}"));
    }
    // Invalidating the inner path removes every tenant's entry of it.
    assert!(
        CacheLayer::invalidate(&cache, "GET", "/products")
            .await
            .unwrap()
    );
    assert_nothing_stored(&server, &cache, "trust-nest").await;
}

async fn link(uri: axum::http::Uri) -> String {
    format!("{}://checkout", uri.scheme_str().unwrap_or("?"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uris_scheme_is_in_the_key() {
    let server = RedisServer::start();
    let cache = server.cache("trust-scheme").await;
    let app: Router = Router::new().route("/p", get(link)).layer(layer(&cache));
    call(&app, request("http://shop.example/p", &[])).await;
    let (_, body) = call(&app, request("https://shop.example/p", &[])).await;
    assert_eq!(body, "https://checkout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_host_written_with_a_space_is_keyed_as_parsers_read_it() {
    let server = RedisServer::start();
    let cache = server.cache("trust-fwd-space").await;
    let runs = Runs::default();
    let app = app(layer(&cache), &runs);
    let forwarded = |line: &'static [u8]| {
        request(
            "/catalog",
            &[("host", b"shop.example"), ("forwarded", line)],
        )
    };
    let (_, attacker) = call(&app, forwarded(b"host=evil.example, for=203.0.113.9")).await;
    assert_eq!(attacker, "catalog of evil.example");
    let (_, spaced) = call(&app, forwarded(b"host =evil.example, for=203.0.113.9")).await;
    let (_, victim) = call(&app, forwarded(b"for=198.51.100.7, for=203.0.113.1")).await;
    assert_eq!(victim, "catalog of shop.example", "after {spaced}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_the_closure_cannot_read_is_never_taken_for_anonymous() {
    let server = RedisServer::start();
    let cache = server.cache("trust-unreadable-user").await;
    let runs = Runs::default();
    // The README's closure: `to_str` fails on a Latin-1 id, and it answers `None`.
    let layer = keyed_by_user_id(&cache);
    let app = app(layer, &runs);
    let (x_cache, _) = call(&app, request("/me", &[("x-user-id", b"jos\xe9")])).await;
    assert_eq!(x_cache, None, "an identity header it cannot read: uncached");
    let (_, anonymous) = call(&app, request("/me", &[])).await;
    assert_eq!(anonymous, "profile of nobody");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_identity_header_is_a_credential() {
    let server = RedisServer::start();
    let cache = server.cache("trust-identity").await;
    let runs = Runs::default();
    let plain = app(layer(&cache), &runs);
    for user in ["7", "8"] {
        let (x_cache, body) = call(&plain, request("/me", &[("x-user-id", user.as_bytes())])).await;
        assert_eq!((x_cache, body), (None, format!("profile of {user}")));
    }
    let custom = layer(&cache).credential_headers(&[header::HeaderName::from_static("x-tenant")]);
    let app = app(custom, &runs);
    let (x_cache, _) = call(&app, request("/tenant", &[("x-tenant", b"acme")])).await;
    assert_eq!(x_cache, None, "a header named a credential");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sloppy_private_cache_control_is_never_stored() {
    let server = RedisServer::start();
    let cache = server.cache("trust-sloppy").await;
    let runs = Runs::default();
    let app = app(layer(&cache), &runs);
    answered_twice_unstored(
        &app,
        &[
            "cache-control:private; max-age=0",
            "cache-control:private max-age=600",
            "cache-control:no-store; must-revalidate",
            "cache-control:\"private\"",
            "surrogate-control:no-store",
        ],
    )
    .await;
    assert_nothing_stored(&server, &cache, "trust-sloppy").await;
}

// The third adversarial pass.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prohibition_after_a_malformed_value_is_never_stored() {
    let server = RedisServer::start();
    let cache = server.cache("trust-values").await;
    let runs = Runs::default();
    let app = app(layer(&cache), &runs);
    answered_twice_unstored(
        &app,
        &[
            "cache-control:max-age=60, stale-while-revalidate=30; private",
            "cache-control:stale-if-error=600 private",
            "cache-control:max-age=600; private",
            "cache-control:public, s-maxage=600 no-store",
            "cdn-cache-control:max-age=600 private",
            "surrogate-control:max-age=60 no-store",
            "surrogate-control:max-age=0",
        ],
    )
    .await;
    assert_nothing_stored(&server, &cache, "trust-values").await;
    let no_store = request("/me", &[("cache-control", b"max-age=0; no-store")]);
    assert_eq!(
        call(&app, no_store).await.0,
        None,
        "an unreadable request: uncached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_tenant_headers_never_cross() {
    let server = RedisServer::start();
    let cache = server.cache("trust-more-headers").await;
    let runs = Runs::default();
    let app = app(layer(&cache), &runs);
    for name in [
        "x-api-key",
        "x-amzn-mtls-clientcert",
        "tailscale-user-login",
    ] {
        let (x_cache, _) = call(&app, request("/me", &[(name, b"alice")])).await;
        assert_eq!(x_cache, None, "{name} is a credential");
    }
    // A tenant header joins the key: each tenant cached, none served another's.
    for tenant in [&b"acme"[..], b"globex", b"acme"] {
        let (_, body) = call(&app, request("/tenant", &[("x-tenant", tenant)])).await;
        let hex: String = tenant.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(body, format!("tenant {hex}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_id_sent_twice_is_never_cached() {
    let server = RedisServer::start();
    let cache = server.cache("trust-doubled").await;
    let runs = Runs::default();
    let layer = keyed_by_user_id(&cache);
    let app = app(layer, &runs);
    call(&app, request("/me", &[("x-user-id", b"alice")])).await;
    // The client's own `X-User-Id: alice`, then the one the gateway appended.
    let forged = Request::get("/me")
        .header("x-user-id", "alice")
        .header("x-user-id", "mallory")
        .body(Body::empty())
        .unwrap();
    let (x_cache, _) = call(&app, forged).await;
    assert_eq!(
        x_cache, None,
        "read differently by a handler and the closure: uncached"
    );
}

/// A rewrite between two routers (`/products?tenant=acme` to `/t/acme/products`) changes the
/// query too: the whole original path and query is keyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_uri_is_keyed_as_it_was_sent() {
    let server = RedisServer::start();
    let cache = server.cache("trust-rewrite").await;
    let tenant_app: Router = Router::new().nest(
        "/t/{tenant}",
        Router::new()
            .route("/products", get(nested_products))
            .layer(layer(&cache)),
    );
    let legacy = tenant_app.map_request(|mut request: Request<Body>| {
        let query = request.uri().query().unwrap_or_default().to_owned();
        let tenant = query.strip_prefix("tenant=").unwrap_or("none").to_owned();
        *request.uri_mut() = format!("/t/{tenant}/products").parse().unwrap();
        request
    });
    let app: Router = Router::new().route_service("/products", legacy);
    for tenant in ["acme", "globex", "acme"] {
        let path = format!("/products?tenant={tenant}");
        let (_, body) = call(&app, request(&path, &[])).await;
        assert_eq!(body, format!("products of tenant {tenant}"));
    }
}

// The fourth adversarial pass.

/// A `GET` whose body the handler reads.
async fn orders(body: String) -> String {
    format!("orders of {body}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_body_is_never_cached() {
    let server = RedisServer::start();
    let cache = server.cache("trust-body").await;
    let app: Router = Router::new()
        .route("/orders", get(orders))
        .layer(layer(&cache));
    for customer in ["alice", "bob"] {
        // No `Content-Length`, as over HTTP/2.
        let request = Request::get("/orders").body(Body::from(customer)).unwrap();
        let (x_cache, body) = call(&app, request).await;
        assert_eq!((x_cache, body), (None, format!("orders of {customer}")));
    }
    let declared = request("/orders", &[("content-length", b"5")]);
    assert_eq!(call(&app, declared).await.0, None);
}

/// Waits at the gate, then answers for the client it was asked by, with `Cache-Control` as
/// the query says.
async fn nearest_store(
    State(gate): State<Arc<tokio::sync::Semaphore>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> impl IntoResponse {
    let _permit = gate.acquire().await.unwrap();
    let client = headers["x-forwarded-for"].to_str().unwrap().to_owned();
    let control = params[0].1.clone();
    (
        [(header::CACHE_CONTROL, control)],
        format!("store near {client}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_may_not_be_reused_is_not_handed_to_requests_that_waited() {
    let server = RedisServer::start();
    let cache = server.cache("trust-waiters").await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let app: Router = Router::new()
        .route("/store", get(nearest_store))
        .layer(layer(&cache))
        .with_state(gate.clone());
    let asked: Vec<_> = (1..=4)
        .map(|client| {
            let app = app.clone();
            let uri = "/store?cc=max-age%3D0%2C%20must-revalidate";
            let ip = format!("10.0.0.{client}");
            tokio::spawn(async move {
                let asked = request(uri, &[("x-forwarded-for", ip.as_bytes())]);
                (ip, call(&app, asked).await.1)
            })
        })
        .collect();
    let joined = cached_redis_tests::eventually(Duration::from_secs(10), || async {
        cache.stats().coalesced == 3
    });
    assert!(joined.await, "{:?}", cache.stats());
    gate.add_permits(4);
    for answer in asked {
        let (ip, body) = answer.await.unwrap();
        assert_eq!(body, format!("store near {ip}"), "its own answer");
    }
}

async fn cart(State(runs): State<Runs>) -> impl IntoResponse {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("token-of-visitor-{run}");
    ([("x-csrf-token", token.clone())], format!("cart, {token}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_visitor_token_in_a_response_header_is_never_stored() {
    let server = RedisServer::start();
    let cache = server.cache("trust-token").await;
    let runs = Runs::default();
    let app: Router = Router::new()
        .route("/cart", get(cart))
        .layer(layer(&cache))
        .with_state(runs.clone());
    for visitor in 1..=2 {
        let (_, body) = call(&app, request("/cart", &[])).await;
        assert_eq!(body, format!("cart, token-of-visitor-{visitor}"));
    }
}

/// Someone with write access to Redis copies one user's entry under the anonymous key, or
/// forges a `Set-Cookie` into an entry: neither is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_copied_or_forged_in_redis_is_not_replayed() {
    let server = RedisServer::start();
    let cache = server.cache("trust-forged").await;
    let runs = Runs::default();
    let layer = keyed_by_user_id(&cache);
    let app = app(layer, &runs);
    call(&app, request("/me", &[("x-user-id", b"alice")])).await;
    // The store runs after the response: settled before the entry is copied and forged (CI
    // once read it before it was written).
    cache.settle().await;
    let mut conn = server.conn().await;
    let alice = "trust-forged:{http:GET:/me|user=alice}";
    let anonymous = "trust-forged:{http:GET:/me}";
    let _: () = redis::cmd("COPY")
        .arg(alice)
        .arg(anonymous)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (x_cache, body) = call(&app, request("/me", &[])).await;
    assert_ne!(x_cache.as_deref(), Some("HIT"), "a copy is not replayed");
    assert_eq!(body, "profile of nobody");

    let stored: Vec<u8> = redis::cmd("GET")
        .arg(alice)
        .query_async(&mut conn)
        .await
        .unwrap();
    let forged = String::from_utf8(stored).unwrap().replacen(
        r#""headers":["#,
        r#""headers":[["set-cookie",{"text":"session=attacker"}],"#,
        1,
    );
    assert!(forged.contains("session=attacker"), "{forged}");
    let _: () = redis::cmd("SET")
        .arg(alice)
        .arg(&forged)
        .arg("KEEPTTL")
        .query_async(&mut conn)
        .await
        .unwrap();
    let response = app
        .clone()
        .oneshot(request("/me", &[("x-user-id", b"alice")]))
        .await
        .unwrap();
    assert!(
        response.headers().get("set-cookie").is_none(),
        "not replayed"
    );
    assert_ne!(
        response
            .headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap()),
        Some("HIT")
    );
}
