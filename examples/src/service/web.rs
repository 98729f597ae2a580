//! HTTP endpoints and the page.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use cached_redis::http::CacheLayer;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::input::{JsonBody, NoFields, ProductId, refused};
use super::repo::{CacheWrite, DB_TIME, Product, ProductRepo, RepoError};

/// Shared by every request.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The repository (and, through it, the cache).
    pub repo: ProductRepo,
    metrics: Option<PrometheusHandle>,
    /// One stampede at a time: each is up to [`MAX_CALLERS`] tasks.
    stampedes: Arc<Semaphore>,
}

impl AppState {
    /// State over `repo`; `metrics` renders `/metrics` when a recorder is installed.
    pub fn new(repo: ProductRepo, metrics: Option<PrometheusHandle>) -> AppState {
        AppState {
            repo,
            metrics,
            stampedes: Arc::new(Semaphore::new(1)),
        }
    }
}

/// The route whose whole responses the HTTP layer caches.
const CATALOG: &str = "/api/catalog";

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    // One JSON route cached whole by the HTTP layer, beside the attribute-cached reads.
    let catalog_layer =
        CacheLayer::new(state.repo.cache().clone(), Duration::from_secs(30)).name("catalog");
    Router::new()
        .route("/", get(page))
        .route(CATALOG, get(catalog).layer(catalog_layer))
        .route("/api/products/{id}", get(read_product))
        .route("/api/products/{id}/ttl", get(product_ttl))
        .route("/api/products/{id}/price", post(update_price))
        .route("/api/products/{id}/stock", post(change_stock))
        .route("/api/products/{id}/invalidate", post(invalidate_product))
        .route("/api/products/{id}/stampede", post(stampede))
        .route("/api/featured", get(featured))
        .route("/stats", get(stats))
        .route("/stats/reset", post(reset_stats))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

fn error(e: &RepoError) -> Response {
    let status = match e {
        RepoError::NotFound => StatusCode::NOT_FOUND,
        RepoError::OutOfStock => StatusCode::CONFLICT,
        RepoError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        RepoError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refused(status, e.to_string())
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// Reads a product through the cache, reporting whether the database was read and how long
/// the database and the rest (Redis) took.
async fn read_product(State(state): State<AppState>, ProductId(id): ProductId) -> Response {
    let started = Instant::now();
    let (result, db_time) = DB_TIME
        .scope(Cell::new(None), async {
            let result = state.repo.get_product(id).await;
            (result, DB_TIME.with(Cell::get))
        })
        .await;
    let total = started.elapsed();
    match result {
        Ok(product) => Json(json!({
            "product": product,
            "outcome": if db_time.is_some() { "miss" } else { "hit" },
            "total_us": micros(total),
            "db_us": db_time.map(micros),
            "redis_us": micros(total.saturating_sub(db_time.unwrap_or_default())),
        }))
        .into_response(),
        Err(e) => error(&e),
    }
}

async fn product_ttl(State(state): State<AppState>, ProductId(id): ProductId) -> Json<Value> {
    // The key `get_product` caches under, from the helper the attribute generates.
    let ttl = state
        .repo
        .cache()
        .ttl(&state.repo.get_product_key(id))
        .await;
    Json(json!({
        "ttl_ms": ttl.as_ref().ok().copied().flatten().map(|d| d.as_millis() as u64),
        "redis_reachable": ttl.is_ok(),
    }))
}

#[derive(Deserialize)]
struct PriceChange {
    price_cents: i64,
}

async fn update_price(
    State(state): State<AppState>,
    ProductId(id): ProductId,
    JsonBody(change): JsonBody<PriceChange>,
) -> Response {
    let changed = state.repo.set_price(id, change.price_cents).await;
    written(&state, changed, "invalidated").await
}

/// A write's answer: the product, what the cache said (`field`: whether the entry was removed
/// or changed, `cache_error` if Redis could not be told), after the catalog is forgotten.
async fn written(
    state: &AppState,
    changed: Result<(Product, CacheWrite), RepoError>,
    field: &str,
) -> Response {
    forget_catalog(state).await;
    match changed {
        Ok((product, said)) => {
            let mut answer = json!({
                "product": product,
                "cache_error": said.as_ref().err().map(|e| e.to_string()),
            });
            answer[field] = Value::Bool(said.is_ok_and(|done| done));
            Json(answer).into_response()
        }
        Err(e) => error(&e),
    }
}

#[derive(Deserialize)]
struct StockChange {
    delta: i64,
}

async fn change_stock(
    State(state): State<AppState>,
    ProductId(id): ProductId,
    JsonBody(change): JsonBody<StockChange>,
) -> Response {
    let changed = state.repo.change_stock(id, change.delta).await;
    written(&state, changed, "updated_in_cache").await
}

/// Every product, as JSON: the response the HTTP layer stores.
async fn catalog(State(state): State<AppState>) -> Response {
    match state.repo.list_all().await {
        Ok(products) => Json(json!({ "products": products })).into_response(),
        Err(e) => error(&e),
    }
}

/// After a write: the catalog's stored response is stale (logged if Redis cannot be told: the
/// invalidation is then kept and replayed when Redis answers again).
async fn forget_catalog(state: &AppState) {
    if let Err(e) = CacheLayer::invalidate(state.repo.cache(), "GET", CATALOG).await {
        tracing::warn!(error = %e, "could not invalidate the catalog's response");
    }
}

async fn invalidate_product(
    State(state): State<AppState>,
    ProductId(id): ProductId,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> Response {
    match state.repo.invalidate_get_product(id).await {
        Ok(removed) => Json(json!({ "invalidated": removed })).into_response(),
        Err(e) => refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The most concurrent callers one stampede may start.
const MAX_CALLERS: u64 = 1_000;

#[derive(Deserialize)]
struct StampedeSize {
    /// Concurrent callers, 1 to [`MAX_CALLERS`]; 50 if absent.
    n: Option<u64>,
}

/// Invalidates a product, then reads it with `n` concurrent callers (body `{"n": 200}`). A
/// missing product answers 404 after one read, before any stampede: its `Err` is never cached
/// (so is not shared), and `n` callers would each have read the database.
async fn stampede(
    State(state): State<AppState>,
    ProductId(id): ProductId,
    JsonBody(size): JsonBody<StampedeSize>,
) -> Response {
    let n = size.n.unwrap_or(50);
    if !(1..=MAX_CALLERS).contains(&n) {
        let why = format!("n must be between 1 and {MAX_CALLERS}");
        return refused(StatusCode::UNPROCESSABLE_ENTITY, why);
    }
    let Ok(_running) = state.stampedes.clone().try_acquire_owned() else {
        let why = "a stampede is already running: try again when it ends";
        return refused(StatusCode::TOO_MANY_REQUESTS, why);
    };
    if let Err(e) = state.repo.get_product(id).await {
        return error(&e);
    }
    let _ = state.repo.invalidate_get_product(id).await;
    let reads_before = state.repo.db_reads();
    let started = Instant::now();
    // A JoinSet: callers still running when this answers (an error, a client gone) are aborted.
    let mut callers = JoinSet::new();
    for _ in 0..n {
        let repo = state.repo.clone();
        callers.spawn(async move { repo.get_product(id).await });
    }
    let mut prices = Vec::with_capacity(n as usize);
    while let Some(answered) = callers.join_next().await {
        match answered {
            Ok(Ok(product)) => prices.push(product.price_cents),
            Ok(Err(e)) => return error(&e),
            Err(e) => return refused(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    Json(json!({
        "callers": n,
        "db_reads": state.repo.db_reads() - reads_before,
        "all_agree": prices.windows(2).all(|w| w[0] == w[1]),
        "took_us": micros(started.elapsed()),
    }))
    .into_response()
}

/// The featured list, and whether it was past its TTL when the request came (then it is
/// answered with the stale list at once while one refresh runs in the background). Read before
/// the call: after it, the refresh may already have stored.
async fn featured(State(state): State<AppState>) -> Response {
    let fresh_for = state.repo.featured_fresh_for().await.ok().flatten();
    match state.repo.list_featured().await {
        Ok(products) => Json(json!({
            "products": products,
            "stale": fresh_for == Some(Duration::ZERO),
            "fresh_for_ms": fresh_for.map(|d| d.as_millis() as u64),
        }))
        .into_response(),
        Err(e) => error(&e),
    }
}

async fn stats(State(state): State<AppState>) -> Json<Value> {
    let cache = state.repo.cache();
    let s = cache.stats();
    let ping = cache.ping().await;
    let mode = match (cache.is_disabled(), ping.is_ok()) {
        (true, _) => "disabled",
        (false, true) => "cached",
        (false, false) => "uncached: redis unreachable",
    };
    Json(json!({
        "redis_reachable": ping.is_ok(),
        "cache_disabled": cache.is_disabled(),
        "cache": mode,
        "db_reads": state.repo.db_reads(),
        "hits": s.hits,
        "misses": s.misses,
        "loads": s.loads,
        "load_errors": s.load_errors,
        "coalesced": s.coalesced,
        "lock_waits": s.lock_waits,
        "stale_refused": s.stale_refused,
        "decode_errors": s.decode_errors,
        "redis_errors": s.redis_errors,
        "fallbacks": s.fallbacks,
    }))
}

async fn reset_stats(
    State(state): State<AppState>,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> StatusCode {
    state.repo.cache().reset_stats();
    state.repo.reset_db_reads();
    StatusCode::NO_CONTENT
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics recorder installed",
        )
            .into_response(),
    }
}
