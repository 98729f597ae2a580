//! The service example, end to end: every HTTP endpoint over SQLite and (where it runs on
//! loopback) PostgreSQL, the service without Redis, and the page driven in headless Chromium.

use std::net::SocketAddr;

use cached_redis_tests::{RedisServer, RefusingPort, free_port};
use examples::service::{Config, router, state};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Starts the service on a free port; it runs until the test's runtime ends.
async fn start(redis_url: String, database_url: String) -> SocketAddr {
    let config = Config {
        redis_url,
        database_url,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        // Generous: a busy machine's slow reply must not turn an asserted hit into a fallback.
        op_timeout: std::time::Duration::from_secs(5),
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

/// One HTTP/1.1 request; returns the status and the body (read by its `Content-Length`, since
/// not every server closes the connection when asked to).
async fn http(addr: SocketAddr, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
    let (status, _, body) = exchange(addr, method, path, json).await;
    (status, body)
}

/// A `GET` of `path`: status, body and the value of the header `name`.
async fn http_with_header(
    addr: SocketAddr,
    path: &str,
    name: &str,
) -> (u16, String, Option<String>) {
    let (status, headers, body) = exchange(addr, "GET", path, None).await;
    let value = headers
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v);
    (status, body, value)
}

/// One HTTP/1.1 exchange with a JSON body (or none): status, headers and body.
async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    exchange_as(
        addr,
        method,
        path,
        Some("application/json"),
        json.unwrap_or(""),
    )
    .await
}

/// One HTTP/1.1 exchange whose body has `content_type` (no `Content-Type` header if `None`).
async fn exchange_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stream = tokio::io::BufReader::new(stream);
    let content_type = content_type
        .map(|t| format!("Content-Type: {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let mut status_line = String::new();
    stream.read_line(&mut status_line).await.unwrap();
    let status = status_line[9..12].parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        stream.read_line(&mut header).await.unwrap();
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse::<usize>().ok());
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            stream.read_exact(&mut body).await.unwrap();
        }
        None => {
            stream.read_to_end(&mut body).await.unwrap();
        }
    }
    (status, headers, String::from_utf8_lossy(&body).into_owned())
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

    assert_eq!(http(addr, "POST", "/stats/reset", Some("{}")).await.0, 204);
    json(addr, "POST", "/api/products/1/invalidate", Some("{}")).await;
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

    let sold = json(
        addr,
        "POST",
        "/api/products/1/stock",
        Some(r#"{"delta":-1}"#),
    )
    .await;
    assert_eq!(sold["updated_in_cache"], true, "{sold}");
    let stock = after["product"]["stock"].as_i64().unwrap();
    assert_eq!(sold["product"]["stock"], stock - 1);
    let read = json(addr, "GET", "/api/products/1", None).await;
    assert_eq!(
        read["outcome"], "hit",
        "updated in place, not invalidated: {read}"
    );
    assert_eq!(read["product"]["stock"], stock - 1, "{read}");
    let (status, body) = http(
        addr,
        "POST",
        "/api/products/1/stock",
        Some(r#"{"delta":-1000}"#),
    )
    .await;
    assert_eq!(status, 409, "stock never goes below zero: {body}");

    // The catalog route is cached whole by the HTTP layer, and writes invalidate it.
    let x_cache = |response: &(u16, String, Option<String>)| response.2.clone();
    let first = http_with_header(addr, "/api/catalog", "x-cache").await;
    assert_eq!(
        (first.0, x_cache(&first).as_deref()),
        (200, Some("MISS")),
        "{first:?}"
    );
    let second = http_with_header(addr, "/api/catalog", "x-cache").await;
    assert_eq!(x_cache(&second).as_deref(), Some("HIT"));
    assert_eq!(second.1, first.1);
    json(
        addr,
        "POST",
        "/api/products/2/price",
        Some(r#"{"price_cents":777}"#),
    )
    .await;
    let after_write = http_with_header(addr, "/api/catalog", "x-cache").await;
    assert_eq!(
        x_cache(&after_write).as_deref(),
        Some("MISS"),
        "a write invalidates it"
    );
    assert!(
        after_write.1.contains(r#""price_cents":777"#),
        "{}",
        after_write.1
    );

    let removed = json(addr, "POST", "/api/products/1/invalidate", Some("{}")).await;
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
    assert_eq!(featured["stale"], false, "{featured}");

    let stampede = json(
        addr,
        "POST",
        "/api/products/2/stampede",
        Some(r#"{"n":200}"#),
    )
    .await;
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
    assert_eq!(http(addr, "POST", "/stats/reset", Some("{}")).await.0, 204);
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
        "cached_redis_coalesced_total{function=\"get_product\"}",
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

/// `REDIS_URL=""` disables the cache: every read goes to the database, and the page says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_redis_url_disables_the_cache_and_the_page_says_so() {
    let addr = start(String::new(), sqlite_url("disabled")).await;
    for _ in 0..2 {
        let read = json(addr, "GET", "/api/products/3", None).await;
        assert_eq!(
            read["outcome"], "miss",
            "every read goes to the database: {read}"
        );
    }
    let stats = json(addr, "GET", "/stats", None).await;
    assert_eq!(stats["cache"], "disabled");
    assert_eq!(stats["cache_disabled"], true);
    assert_eq!(stats["db_reads"], 2);
    let (_, page) = http(addr, "GET", "/", None).await;
    assert!(page.contains("Cache disabled (REDIS_URL is empty)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_service_runs_uncached_and_says_so() {
    let refusing = RefusingPort::new();
    let addr = start(refusing.url(), sqlite_url("no-redis")).await;
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
    let sold = json(
        addr,
        "POST",
        "/api/products/3/stock",
        Some(r#"{"delta":-1}"#),
    )
    .await;
    assert_eq!(
        sold["product"]["stock"], 19,
        "the sale is committed: {sold}"
    );
    assert_eq!(sold["updated_in_cache"], false, "{sold}");
    assert!(sold["cache_error"].is_string(), "{sold}");
    assert_eq!(updated["invalidated"], false);
    let said = updated["cache_error"].as_str().unwrap_or_default();
    assert!(
        !said.is_empty(),
        "the page is told the entry may be stale, not that it was not cached: {updated}"
    );
}

/// Rows of `products` whose stock SQLite holds as something other than an integer (a REAL
/// after an overflow, which no read of the row survives).
async fn stocks_not_integers(database_url: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(database_url).await.unwrap();
    let row = sqlx::query("SELECT COUNT(*) AS n FROM products WHERE typeof(stock) <> 'integer'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let n = sqlx::Row::try_get(&row, "n").unwrap();
    pool.close().await;
    n
}

/// A delta that would overflow SQLite's 64-bit integer (it then stores a REAL, and every later
/// read of the row and of the catalog fails) or take the stock past any sensible amount is
/// refused with a 422 that says why; the row keeps reading and the database holds integers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_delta_that_would_overflow_is_refused_and_the_row_stays_an_integer() {
    let redis = RedisServer::start();
    let database_url = sqlite_url("overflow");
    let addr = start(redis.url(), database_url.clone()).await;
    for delta in [i64::MAX, i64::MIN, 1_000_000_000, -1_000_000_000] {
        let body = format!(r#"{{"delta":{delta}}}"#);
        let (status, text) = http(addr, "POST", "/api/products/1/stock", Some(&body)).await;
        assert_eq!(status, 422, "delta {delta}: {text}");
        let said: Value = serde_json::from_str(&text).unwrap();
        assert!(
            said["error"].as_str().is_some_and(|e| e.contains("delta")),
            "the answer says what is wrong: {text}"
        );
    }
    // Within the bounds of one delta, but past the most stock a product can hold.
    let (status, text) = http(
        addr,
        "POST",
        "/api/products/1/stock",
        Some(r#"{"delta":1000000}"#),
    )
    .await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("stock"), "{text}");
    let read = json(addr, "GET", "/api/products/1", None).await;
    assert_eq!(read["product"]["stock"], 20, "nothing was written: {read}");
    json(addr, "GET", "/api/catalog", None).await;
    assert_eq!(stocks_not_integers(&database_url).await, 0);
}

/// A database that an earlier build let hold a REAL stock (product 1 and the catalog answered
/// 500, across restarts) is repaired when the service starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_stock_left_by_an_earlier_build_is_repaired_at_start() {
    let database_url = sqlite_url("repair");
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&database_url).await.unwrap();
    examples::service::migrate(&pool).await.unwrap();
    // What `{"delta": 9223372036854775807}` did before deltas were checked.
    sqlx::query("UPDATE products SET stock = stock + 9223372036854775807 WHERE id = 1")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(stocks_not_integers(&database_url).await, 1, "the damage");

    let redis = RedisServer::start();
    let addr = start(redis.url(), database_url.clone()).await;
    let read = json(addr, "GET", "/api/products/1", None).await;
    assert_eq!(
        read["product"]["stock"],
        examples::service::MAX_STOCK,
        "{read}"
    );
    json(addr, "GET", "/api/catalog", None).await;
    assert_eq!(stocks_not_integers(&database_url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_below_zero_or_above_a_million_dollars_is_refused() {
    let redis = RedisServer::start();
    let addr = start(redis.url(), sqlite_url("price-bounds")).await;
    for price in [-1, 100_000_001, i64::MAX] {
        let body = format!(r#"{{"price_cents":{price}}}"#);
        let (status, text) = http(addr, "POST", "/api/products/1/price", Some(&body)).await;
        assert_eq!(status, 422, "price {price}: {text}");
        assert!(text.contains("price_cents"), "{text}");
    }
    let read = json(addr, "GET", "/api/products/1", None).await;
    assert_eq!(read["product"]["price_cents"], 2490, "{read}");
}

/// An id in the path that is not one is answered as JSON, like every other error (adversarial
/// review: axum's own plain-text rejection before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_is_not_one_is_answered_as_json() {
    let redis = RedisServer::start();
    let addr = start(redis.url(), sqlite_url("bad-id")).await;
    for path in ["/api/products/abc", "/api/products/99999999999999999999"] {
        let (status, text) = http(addr, "GET", path, None).await;
        assert_eq!(status, 400, "{path}: {text}");
        let answer: Value = serde_json::from_str(&text).expect("JSON");
        assert!(answer["error"].is_string(), "{answer}");
    }
}

/// A stampede at an id with no product answers 404 after one database read: the missing id's
/// `Err` is never cached, so `n` concurrent callers would each have read the database. `n`
/// outside 1..=1000 is refused before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_at_a_missing_id_reads_the_database_once_and_n_is_bounded() {
    let redis = RedisServer::start();
    let addr = start(redis.url(), sqlite_url("stampede-missing")).await;
    assert_eq!(http(addr, "POST", "/stats/reset", Some("{}")).await.0, 204);
    let (status, text) = http(
        addr,
        "POST",
        "/api/products/999999/stampede",
        Some(r#"{"n":1000}"#),
    )
    .await;
    assert_eq!(status, 404, "{text}");
    let stats = json(addr, "GET", "/stats", None).await;
    assert_eq!(stats["db_reads"], 1, "one read, not 1,000: {stats}");

    for n in ["0", "1001", "-1", "18446744073709551616"] {
        let body = format!(r#"{{"n":{n}}}"#);
        let (status, text) = http(addr, "POST", "/api/products/1/stampede", Some(&body)).await;
        assert_eq!(status, 422, "n = {n}: {text}");
        let said: Value = serde_json::from_str(&text).expect("a JSON error");
        assert!(
            said["error"]
                .as_str()
                .is_some_and(|e| e.contains("n must be between 1 and 1000") || e.contains("n: ")),
            "the answer names n: {text}"
        );
    }
    let stats = json(addr, "GET", "/stats", None).await;
    assert_eq!(stats["db_reads"], 1, "no stampede ran: {stats}");
}

/// The catalog reads its products through one batch: with one product cached, a cold catalog
/// takes two database reads (the ids, and the other products in one query), not one a product;
/// after a write to one product, only that product is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_reads_its_products_in_one_batch() {
    let redis = RedisServer::start();
    let addr = start(redis.url(), sqlite_url("catalog-batch")).await;
    let one = json(addr, "GET", "/api/products/1", None).await;
    assert_eq!(one["outcome"], "miss", "{one}");
    assert_eq!(http(addr, "POST", "/stats/reset", Some("{}")).await.0, 204);
    let (status, body) = http(addr, "GET", "/api/catalog", None).await;
    assert_eq!(status, 200, "{body}");
    let catalog: Value = serde_json::from_str(&body).unwrap();
    let products = catalog["products"].as_array().expect("a list");
    assert!(products.len() > 2, "{catalog}");
    assert_eq!(products[0], one["product"], "product 1 came from its entry");
    let stats = json(addr, "GET", "/stats", None).await;
    assert_eq!(
        stats["db_reads"], 2,
        "the ids, then the rest at once: {stats}"
    );
    assert_eq!(stats["hits"], 1, "product 1: {stats}");

    json(
        addr,
        "POST",
        "/api/products/2/price",
        Some(r#"{"price_cents":555}"#),
    )
    .await;
    assert_eq!(http(addr, "POST", "/stats/reset", Some("{}")).await.0, 204);
    let catalog = json(addr, "GET", "/api/catalog", None).await;
    assert_eq!(catalog["products"][1]["price_cents"], 555, "{catalog}");
    let stats = json(addr, "GET", "/stats", None).await;
    assert!(
        matches!(stats["db_reads"].as_u64(), Some(1 | 2)),
        "the ids, and at most product 2: {stats}"
    );
}

/// Every state-changing endpoint needs a JSON body (`Content-Type: application/json`), which
/// another site's page cannot send without the browser asking this service first (a CORS
/// preflight it does not answer): a form post (urlencoded, multipart, or text/plain holding
/// JSON) or a POST without a body is refused with 415 and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_endpoints_refuse_what_a_cross_site_form_can_send() {
    let redis = RedisServer::start();
    let addr = start(redis.url(), sqlite_url("csrf")).await;
    json(addr, "GET", "/api/products/1", None).await;
    let forms = [
        (
            Some("application/x-www-form-urlencoded"),
            "price_cents=1&delta=-1&n=5",
        ),
        (Some("text/plain"), r#"{"price_cents":1,"delta":-1,"n":5}"#),
        (Some("multipart/form-data; boundary=x"), "--x--\r\n"),
        (None, ""),
    ];
    for path in [
        "/api/products/1/price",
        "/api/products/1/stock",
        "/api/products/1/invalidate",
        "/api/products/1/stampede",
        "/stats/reset",
    ] {
        for (content_type, body) in forms {
            let (status, _, text) = exchange_as(addr, "POST", path, content_type, body).await;
            assert_eq!(status, 415, "POST {path} as {content_type:?}: {text}");
        }
    }
    let read = json(addr, "GET", "/api/products/1", None).await;
    assert_eq!(read["outcome"], "hit", "nothing was invalidated: {read}");
    assert_eq!(
        (&read["product"]["price_cents"], &read["product"]["stock"]),
        (&Value::from(2490), &Value::from(20)),
        "nothing was written: {read}"
    );
    let stats = json(addr, "GET", "/stats", None).await;
    assert_eq!(
        stats["db_reads"], 1,
        "no stampede ran and the counters were not reset: {stats}"
    );
}

/// A WebDriver session on chromedriver (Debian's `chromium-driver`) with headless Chromium:
/// the W3C protocol is JSON over HTTP, so the test speaks it with its own small client.
struct Browser {
    driver: tokio::process::Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        // Its own process group, so that dropping the browser (even after a failed assertion)
        // also ends the Chromium processes chromedriver started.
        let mut driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("no chromedriver on PATH: install it (Debian: apt-get install chromium-driver; .ci/run does)");
        let mut lines = tokio::io::BufReader::new(driver.stdout.take().unwrap()).lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("started successfully") {
                break;
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1100,1000", "--hide-scrollbars",
            ]},
        }}});
        let created = webdriver(addr, "POST", "/session", Some(capabilities)).await;
        let session = created["sessionId"].as_str().expect("a session").to_owned();
        Browser {
            driver,
            addr,
            session,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        webdriver(
            self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
        .await
    }

    async fn open(&self, url: &str) {
        self.call("POST", "/url", Some(serde_json::json!({ "url": url })))
            .await;
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                "POST",
                "/element",
                Some(serde_json::json!({"using": "css selector", "value": css})),
            )
            .await;
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no {css}: {found}"))
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            "POST",
            &format!("/element/{id}/click"),
            Some(serde_json::json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            "POST",
            &format!("/element/{id}/clear"),
            Some(serde_json::json!({})),
        )
        .await;
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(serde_json::json!({ "text": text })),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        self.call("GET", &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (up to 5 s) until the element's text contains `expected`, as a person watching it.
    async fn wait_for_text(&self, css: &str, expected: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let text = self.text(css).await;
            if text.contains(expected) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{css} shows {text:?}, not {expected:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn close(self) {
        self.call("DELETE", "", None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

/// One WebDriver command; returns the response's `value`.
async fn webdriver(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string());
    let (status, text) = http(addr, method, path, body.as_deref()).await;
    let reply: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(status, 200, "webdriver {method} {path}: {text}");
    reply["value"].clone()
}

/// The page in headless Chromium, driven through WebDriver: read (a miss, then a hit), change
/// the price (the entry is invalidated and reloaded, and the read panel shows it), sell one
/// (the entry is updated in place: still a hit), load the catalog twice through the HTTP layer
/// (`X-Cache: MISS`, then `HIT`), fire a stampede (one database read) and one too large (the
/// service's reason shown), and check what the page shows at each step. Every button that
/// changes something posts JSON, as the service requires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_works_in_headless_chromium() {
    let redis = RedisServer::start();
    let addr = start(redis.url(), sqlite_url("browser")).await;
    let browser = Browser::start().await;
    browser.open(&format!("http://{addr}/")).await;
    browser
        .wait_for_text("#redis-status", "Redis reachable")
        .await;

    browser.click("#invalidate").await;
    browser.click("#read").await;
    let first = browser
        .wait_for_text("#read-result", "Espresso beans")
        .await;
    assert!(first.starts_with("miss"), "the first read loads: {first}");
    browser.click("#read").await;
    browser.wait_for_text("#read-result", "hit").await;
    let ttl = browser.wait_for_text("#ttl", " s").await;
    assert!(
        ttl.trim_end_matches(" s")
            .parse::<f64>()
            .is_ok_and(|s| s > 50.0 && s <= 60.0),
        "{ttl}"
    );

    browser.type_into("#new-price", "4321").await;
    browser.click("#update").await;
    browser
        .wait_for_text("#update-result", "Stored $43.21; cached entry invalidated")
        .await;
    browser.wait_for_text("#read-result", "$43.21").await;

    browser.click("#sell").await;
    browser
        .wait_for_text(
            "#sell-result",
            "Stock now 19; cached entry updated in place",
        )
        .await;
    let read = browser.wait_for_text("#read-result", "19 in stock").await;
    assert!(read.starts_with("hit"), "the sale kept the entry: {read}");

    browser.click("#catalog").await;
    browser
        .wait_for_text("#catalog-result", "X-Cache: MISS")
        .await;
    browser.click("#catalog").await;
    let hit = browser
        .wait_for_text("#catalog-result", "X-Cache: HIT")
        .await;
    assert!(hit.contains("5 products"), "{hit}");

    // The featured list, past its TTL (aged in Redis): answered stale while it refreshes.
    browser.click("#featured").await;
    browser
        .wait_for_text("#featured-result", "3 featured products")
        .await;
    let mut conn = redis.conn().await;
    let key = cached_redis_tests::scan_keys(&mut conn, "*featured*").await;
    assert_eq!(key.len(), 1, "{key:?}");
    assert!(cached_redis_tests::stale::expire_in(&mut conn, &key[0], 60_000).await);
    browser.click("#featured").await;
    let stale = browser
        .wait_for_text("#featured-result", "stale, refreshing")
        .await;
    assert!(stale.contains("3 featured products"), "{stale}");
    // The refresh ran in the background: the next answer is fresh.
    let refreshed = || async { json(addr, "GET", "/api/featured", None).await["stale"] == false };
    assert!(cached_redis_tests::eventually(std::time::Duration::from_secs(20), refreshed).await);
    browser.click("#featured").await;
    browser.wait_for_text("#featured-result", "fresh").await;

    browser.type_into("#stampede-n", "100").await;
    browser.click("#stampede").await;
    browser
        .wait_for_text("#stampede-result", "100 concurrent reads → 1 database read")
        .await;
    // The service's reason for refusing reaches the page.
    browser.type_into("#stampede-n", "5000").await;
    browser.click("#stampede").await;
    browser
        .wait_for_text("#error", "422 n must be between 1 and 1000")
        .await;
    browser.wait_for_text("#stats", "db_reads").await;

    // `UPDATE_SCREENSHOT=1` refreshes the README's picture of the page at this point.
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        let png = browser.call("GET", "/screenshot", None).await;
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/service-page.png");
        std::fs::write(path, base64_decode(png.as_str().unwrap())).unwrap();
    }

    browser.click("#reset").await;
    browser.wait_for_text("#stats", "hits: 0").await;
    browser.close().await;
}

/// Standard base64, as WebDriver returns screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .map(value)
        .collect();
    digits
        .chunks(4)
        .flat_map(|chunk| {
            let n =
                chunk.iter().fold(0u32, |n, d| n << 6 | u32::from(*d)) << (6 * (4 - chunk.len()));
            let bytes = n.to_be_bytes();
            bytes[1..chunk.len()].to_vec()
        })
        .collect()
}
