//! The process-wide override of the default cache, for tests: `override_global` reaches every
//! task of the process, the handlers of an axum server started under it among them, where
//! `with_cache` (a task-local) reaches only its own future. Nothing reaches the Redis that
//! `set_global` points at while a guard is held; dropping the guard restores the default.
//!
//! A file of its own, so a process of its own: an override is seen by every test running
//! beside it. Its tests also lock `ONE_AT_A_TIME`, as the docs of `override_global` advise.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use cached_redis::{Cache, redis_cached};
use cached_redis_tests::{RedisServer, scan_keys};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// Tests that override the default run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

static LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "price:<id>", ttl = "60s")]
async fn price(id: u64) -> u64 {
    LOADS.fetch_add(1, Ordering::SeqCst);
    id * 100
}

/// Calls the cached function in the handler's own task and in a task it spawns.
async fn handler(Path(id): Path<u64>) -> String {
    let spawned = tokio::spawn(price(id + 1)).await.unwrap();
    format!("{} {spawned}", price(id).await)
}

/// A real axum server on 127.0.0.1:0; it runs until the test's runtime ends.
async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/price/{id}", get(handler));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The body of a `GET` that must answer 200.
async fn body_of_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_reaches_an_axum_servers_handlers_and_the_real_redis_is_untouched() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let real = RedisServer::start();
    let cache = real.cache("real").await;
    cached_redis::set_global(cache.clone());
    let mut conn = real.conn().await;

    let guard = cached_redis::override_global(Cache::disabled());
    let addr = serve().await;
    assert_eq!(body_of_get(addr, "/price/1").await, "100 200");
    assert_eq!(body_of_get(addr, "/price/1").await, "100 200");
    assert_eq!(
        scan_keys(&mut conn, "*").await,
        Vec::<String>::new(),
        "nothing written to the Redis set_global points at"
    );
    assert_eq!(
        LOADS.load(Ordering::SeqCst),
        4,
        "disabled: every call, in the handler and in its spawned task, loads"
    );

    drop(guard);
    assert_eq!(body_of_get(addr, "/price/3").await, "300 400");
    cache.settle().await;
    assert_eq!(
        scan_keys(&mut conn, "*").await,
        ["real:{price:3}", "real:{price:4}"],
        "without the override the same handlers use the installed cache again"
    );
    cached_redis::take_global();
}

/// Overrides stack: each guard removes only its own, so the newest live one is in force, in
/// whichever order they are dropped; a `with_cache` wins over any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_nest_and_each_guard_removes_only_its_own() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = RedisServer::start();
    let cache = |name: &'static str| server.cache(name);
    let (installed, a, b, c) = (
        cache("installed").await,
        cache("a").await,
        cache("b").await,
        cache("c").await,
    );
    cached_redis::set_global(installed);
    let seen = || async {
        let spawned = tokio::spawn(async { cached_redis::global() });
        let spawned = spawned.await.unwrap().expect("a default");
        spawned.namespace().to_owned()
    };

    let outer = cached_redis::override_global(a.clone());
    assert_eq!(seen().await, "a");
    let inner = cached_redis::override_global(b.clone());
    assert_eq!(seen().await, "b");
    drop(inner);
    assert_eq!(seen().await, "a", "the previous override again");
    drop(outer);
    assert_eq!(seen().await, "installed");

    let outer = cached_redis::override_global(a);
    let inner = cached_redis::override_global(b);
    let scoped = cached_redis::with_cache(c, async { cached_redis::global() }).await;
    assert_eq!(scoped.unwrap().namespace(), "c", "with_cache wins");
    drop(outer);
    assert_eq!(
        seen().await,
        "b",
        "the inner one stays until its guard goes"
    );
    drop(inner);
    assert_eq!(seen().await, "installed");
    cached_redis::take_global();
}
