//! The main example: an axum HTTP service over a real database (SQLite by default, PostgreSQL
//! with `DATABASE_URL=postgres://...`) whose product reads go through `#[redis_cached]`, with a
//! page to watch the cache work.
//!
//! ```text
//! cargo run -p examples --bin service          # then open http://127.0.0.1:3000
//! REDIS_URL=redis://127.0.0.1:6379 DATABASE_URL=postgres://postgres@127.0.0.1/test PORT=3000 \
//!   cargo run -p examples --bin service
//! ```
//!
//! Without a reachable Redis it still serves, uncached, and says so on the page and in /stats.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,cached_redis=warn".into()),
        )
        .init();
    examples::service::run_from_env().await
}
