//! The service example, end to end: every HTTP endpoint over SQLite and (where it runs on
//! loopback) PostgreSQL, the service without Redis, and the page driven in headless Chromium.

use std::net::SocketAddr;
use std::process::Command;

use cached_redis_tests::{RedisServer, free_port};
use examples::service::{Config, router, state};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts the service on a free port; it runs until the test's runtime ends.
async fn start(redis_url: String, database_url: String) -> SocketAddr {
    let config = Config {
        redis_url,
        database_url,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let state = state(&config).await.expect("service state");
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    addr
}

fn sqlite_url(name: &str) -> String {
    let path = std::env::temp_dir().join(format!("cached-redis-{name}-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    format!("sqlite://{}?mode=rwc", path.display())
}

/// One HTTP/1.1 request; returns the status and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = json.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn json(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Value {
    let (status, text) = http(addr, method, path, body).await;
    assert_eq!(status, 200, "{method} {path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Every endpoint, against a service whose Redis answers.
async fn check_every_endpoint(addr: SocketAddr) {
    let (status, page) = http(addr, "GET", "/", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("cached-redis, live") && page.contains("id=\"stampede\""));

    assert_eq!(http(addr, "POST", "/stats/reset", None).await.0, 204);
    json(addr, "POST", "/api/products/1/invalidate", None).await;
    let first = json(addr, "GET", "/api/products/1", None).await;
    assert_eq!(first["outcome"], "miss", "{first}");
    assert!(first["db_us"].as_u64().unwrap() > 0);
    let second = json(addr, "GET", "/api/products/1", None).await;
    assert_eq!(second["outcome"], "hit", "{second}");
    assert_eq!(second["db_us"], Value::Null);
    assert_eq!(second["product"], first["product"]);

    let ttl = json(addr, "GET", "/api/products/1/ttl", None).await;
    let left = ttl["ttl_ms"].as_u64().expect("cached");
    assert!((50_000..=60_000).contains(&left), "{ttl}");

    let updated = json(
        addr,
        "POST",
        "/api/products/1/price",
        Some(r#"{"price_cents":4321}"#),
    )
    .await;
    assert_eq!(updated["invalidated"], true, "{updated}");
    assert_eq!(updated["product"]["price_cents"], 4321);
    let after = json(addr, "GET", "/api/products/1", None).await;
    assert_eq!(
        after["product"]["price_cents"], 4321,
        "a write is visible at once: {after}"
    );

    let removed = json(addr, "POST", "/api/products/1/invalidate", None).await;
    assert_eq!(removed["invalidated"], true);
    let gone = json(addr, "GET", "/api/products/1/ttl", None).await;
    assert_eq!(gone["ttl_ms"], Value::Null);

    let featured = json(addr, "GET", "/api/featured", None).await;
    let ids: Vec<i64> = featured["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 4]);

    let stampede = json(addr, "POST", "/api/products/2/stampede?n=200", None).await;
    assert_eq!(stampede["callers"], 200);
    assert_eq!(
        stampede["db_reads"], 1,
        "one database read for 200 callers: {stampede}"
    );
    assert_eq!(stampede["all_agree"], true);

    let (status, missing) = http(addr, "GET", "/api/products/999", None).await;
    assert_eq!(status, 404, "{missing}");

    let stats = json(addr, "GET", "/stats", None).await;
    assert_eq!(stats["redis_reachable"], true);
    assert_eq!(stats["cache"], "cached");
    assert!(
        stats["hits"].as_u64().unwrap() >= 1 && stats["coalesced"].as_u64().unwrap() >= 100,
        "{stats}"
    );
    assert_eq!(http(addr, "POST", "/stats/reset", None).await.0, 204);
    let reset = json(addr, "GET", "/stats", None).await;
    assert_eq!(
        (reset["hits"].as_u64(), reset["db_reads"].as_u64()),
        (Some(0), Some(0)),
        "{reset}"
    );

    let (status, metrics) = http(addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    for counter in [
        "cached_redis_hits_total{function=\"get_product\"}",
        "cached_redis_loads_total{function=\"get_product\"}",
        "cached_redis_waits_total{function=\"get_product\"}",
    ] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(counter))
            .unwrap_or_else(|| panic!("no {counter} in {metrics}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 1.0, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_over_sqlite() {
    let redis = RedisServer::start();
    let addr = start(redis.url(), sqlite_url("sqlite")).await;
    check_every_endpoint(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_over_postgres_where_it_runs() {
    let admin_url = std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/postgres".into());
    sqlx::any::install_default_drivers();
    let Ok(admin) = sqlx::AnyPool::connect(&admin_url).await else {
        println!("skipped: no PostgreSQL at {admin_url}");
        return;
    };
    let database = format!("cached_redis_example_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {database}"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{}/{database}", admin_url.rsplit_once('/').unwrap().0);
    let redis = RedisServer::start();
    let addr = start(redis.url(), url).await;
    check_every_endpoint(addr).await;
    println!("checked against PostgreSQL database {database}");
    // The service's pool still holds connections; force them out so the database can go.
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .execute(&admin)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_service_runs_uncached_and_says_so() {
    let addr = start(
        format!("redis://127.0.0.1:{}", free_port()),
        sqlite_url("no-redis"),
    )
    .await;
    for _ in 0..2 {
        let read = json(addr, "GET", "/api/products/3", None).await;
        assert_eq!(
            read["outcome"], "miss",
            "every read goes to the database: {read}"
        );
        assert_eq!(read["product"]["id"], 3);
    }
    let stats = json(addr, "GET", "/stats", None).await;
    assert_eq!(stats["redis_reachable"], false);
    assert_eq!(stats["cache"], "uncached: redis unreachable");
    assert_eq!(stats["db_reads"], 2);
    let (_, page) = http(addr, "GET", "/", None).await;
    assert!(page.contains("Redis unreachable: the service runs uncached"));
    let updated = json(
        addr,
        "POST",
        "/api/products/3/price",
        Some(r#"{"price_cents":100}"#),
    )
    .await;
    assert_eq!(
        updated["product"]["price_cents"], 100,
        "writes still work: {updated}"
    );
}

/// The page in headless Chromium (Debian's `chromium`): with `?selftest=1` the page clicks its
/// own buttons (invalidate, read, read, update, read, stampede) as a person would and writes what
/// it showed into the DOM, which Chromium prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_works_in_headless_chromium() {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("no chromium on PATH: install it (Debian: apt-get install chromium; .ci/run does)");
    let redis = RedisServer::start();
    let addr = start(redis.url(), sqlite_url("browser")).await;
    let profile =
        std::env::temp_dir().join(format!("cached-redis-chromium-{}", std::process::id()));
    let url = format!("http://{addr}/?selftest=1");
    let output = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=15000", "--dump-dom", &url])
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout);
    let shown = dom
        .split("data-selftest=\"")
        .nth(1)
        .and_then(|s| s.split('"').next());
    assert_eq!(
        shown,
        Some("read:miss read:hit update:true price:$43.21 stampede:1 redis:true"),
        "the page showed something else:\n{dom}"
    );
}
