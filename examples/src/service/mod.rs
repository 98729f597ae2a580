//! An axum service over a real database whose reads go through cached-redis, with a page that
//! shows hits, misses, TTLs, invalidations and stampedes as they happen.

mod input;
mod repo;
mod web;

use std::net::SocketAddr;
use std::time::Duration;

use cached_redis::Cache;
use sqlx::AnyPool;

pub use repo::{CacheWrite, MAX_PRICE_CENTS, MAX_STOCK, Product, ProductRepo, RepoError, migrate};
pub use web::{AppState, router};

/// Where the service finds its parts.
#[derive(Debug, Clone)]
pub struct Config {
    /// `redis://...`; an unreachable Redis leaves the service running, uncached; an empty one
    /// disables the cache.
    pub redis_url: String,
    /// `sqlite://...` (created if missing) or `postgres://...`.
    pub database_url: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// How long one Redis call may take before the database answers instead.
    pub op_timeout: Duration,
}

impl Config {
    /// From `REDIS_URL`, `DATABASE_URL` and `PORT`, with defaults that need nothing installed but
    /// (optionally) a Redis on loopback.
    pub fn from_env() -> Config {
        let port: u16 = std::env::var("PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(3000);
        Config {
            redis_url: std::env::var("REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            database_url: std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "sqlite://service-example.db?mode=rwc".into()),
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            op_timeout: Duration::from_millis(100),
        }
    }
}

/// Connects to the database (migrating and seeding it) and builds the cache and the state.
pub async fn state(config: &Config) -> Result<AppState, Box<dyn std::error::Error>> {
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(&config.database_url).await?;
    migrate(&pool).await?;
    let cache = Cache::builder(&config.redis_url)
        .namespace("service-example")
        .op_timeout(config.op_timeout)
        .build()
        .await?;
    Ok(AppState::new(
        ProductRepo::new(pool, cache),
        Some(prometheus()),
    ))
}

/// The process's Prometheus recorder, installed on first use.
fn prometheus() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// Runs the service until Ctrl-C.
pub async fn run_from_env() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env();
    let state = state(&config).await?;
    match state.repo.cache().ping().await {
        Err(cached_redis::Error::Disabled) => {
            tracing::info!("cache disabled (REDIS_URL is empty): every read goes to the database")
        }
        Ok(rtt) => {
            tracing::info!(redis = %config.redis_url, ?rtt, "redis reachable: reads are cached")
        }
        Err(e) => {
            tracing::warn!(redis = %config.redis_url, error = %e, "redis unreachable: serving uncached until it answers")
        }
    }
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    println!(
        "service example listening on http://{}",
        listener.local_addr()?
    );
    let cache = state.repo.cache().clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // The last misses' write-backs run in the background: let them land before exiting.
    cache.settle().await;
    Ok(())
}
