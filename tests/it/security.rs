//! Security: passwords never appear in `Debug`, `Display`, logs or errors; Redis ACL users
//! (`redis://user:pass@host`) and TLS (`rediss://` with a CA made at test time) work.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cached_redis::{Cache, redis_cached};
use cached_redis_tests::{RedisServer, TlsFiles};

const PASSWORD: &str = "s3cret-Pa55word";

fn acl_server() -> RedisServer {
    let user = format!(">{PASSWORD}");
    RedisServer::start_with(&[
        "--user", "app", "on", &user, "~*", "&*", "+@all", "--user", "default", "off",
    ])
}

static LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "secret:<id>", ttl = "60s", cache = cache)]
async fn lookup(cache: &Cache, id: u32) -> Result<u32, String> {
    LOADS.fetch_add(1, Ordering::SeqCst);
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_authenticates_and_its_password_never_leaks() {
    let logs = cached_redis_tests::capture_logs(tracing::Level::TRACE);
    let server = acl_server();
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:{}", server.port());
    let cache = Cache::builder(&url).namespace("acl").build().await.unwrap();
    assert_eq!(lookup(&cache, 1).await, Ok(1));
    assert_eq!(lookup(&cache, 1).await, Ok(1));
    assert_eq!(cache.stats().hits, 1, "authenticated as the ACL user");

    // A wrong password: calls fall back to the loader and the failure is logged.
    let wrong = format!("redis://app:{PASSWORD}-wrong@127.0.0.1:{}", server.port());
    let denied = Cache::builder(&wrong)
        .namespace("acl")
        .build()
        .await
        .unwrap();
    assert_eq!(lookup(&denied, 2).await, Ok(2));
    assert_eq!(denied.stats().fallbacks, 1);
    let invalidate_error = denied
        .invalidate(&cached_redis::Key::raw("secret:2"))
        .await
        .unwrap_err();

    // An unparsable URL with a password in it.
    let bad_url = format!("redis://app:{PASSWORD}@127.0.0.1:notaport");
    let parse_error = Cache::builder(&bad_url).build().await.unwrap_err();

    let shown = [
        format!("{cache:?}"),
        format!("{:?}", Cache::builder(&url)),
        format!("{parse_error}"),
        format!("{parse_error:?}"),
        format!("{invalidate_error}"),
        format!("{invalidate_error:?}"),
        logs.text(),
    ];
    for text in &shown {
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
    }
    assert!(shown[0].contains("app:***@127.0.0.1"), "{}", shown[0]);
    assert!(
        shown[6].contains("redis trouble"),
        "the auth failure was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_verify_the_server_against_the_given_ca() {
    let files = TlsFiles::generate();
    let server = RedisServer::start_tls(&files);
    assert!(server.url().starts_with("rediss://"));
    let cache = Cache::builder(&server.url())
        .namespace("tls")
        .op_timeout(Duration::from_secs(1))
        .tls_root_cert(files.ca_pem())
        .build()
        .await
        .unwrap();
    assert_eq!(lookup(&cache, 3).await, Ok(3));
    assert_eq!(lookup(&cache, 3).await, Ok(3));
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.redis_errors), (1, 0), "{stats:?}");
    assert!(
        cache
            .invalidate(&cached_redis::Key::raw("secret:3"))
            .await
            .unwrap()
    );

    // Without the CA, the server's certificate is not trusted: the cache falls back.
    let untrusting = Cache::builder(&server.url())
        .namespace("tls")
        .build()
        .await
        .unwrap();
    assert_eq!(lookup(&untrusting, 3).await, Ok(3));
    assert_eq!(untrusting.stats().fallbacks, 1);
}
