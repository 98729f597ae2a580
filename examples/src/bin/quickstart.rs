//! The smallest complete program: one cached function, a miss, a hit, an invalidation.
//!
//! Run it with a Redis on 127.0.0.1:6379 (or set `REDIS_URL`):
//!
//! ```text
//! cargo run -p examples --bin quickstart
//! ```
//!
//! Without a reachable Redis it still runs, uncached, and says so.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use cached_redis::{Cache, redis_cached};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug)]
struct DbError;

static DB_READS: AtomicU32 = AtomicU32::new(0);

/// Reads a user from the "database" (a sleep stands in for the query).
#[redis_cached(key = "user:<id>:v1", ttl = "60s", jitter = "10%")]
async fn get_user(id: u64) -> Result<User, DbError> {
    DB_READS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    Ok(User {
        id,
        name: format!("user-{id}"),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = Cache::builder(&url).namespace("quickstart").build().await?;
    cached_redis::set_global(cache.clone());

    // Start from a cold entry, whatever an earlier run left behind.
    let _ = invalidate_get_user(42).await;

    for label in ["first call (miss: loads)", "second call (hit)"] {
        let started = Instant::now();
        let user = get_user(42).await.map_err(|_| "database error")?;
        println!("{label:<28} {user:?} in {:?}", started.elapsed());
    }

    match invalidate_get_user(42).await {
        Ok(removed) => println!("invalidate_get_user(42) removed an entry: {removed}"),
        Err(e) => {
            println!("invalidate_get_user(42) failed: {e} (Redis unreachable: running uncached)")
        }
    }
    let started = Instant::now();
    let user = get_user(42).await.map_err(|_| "database error")?;
    println!(
        "{:<28} {user:?} in {:?}",
        "after invalidation (loads)",
        started.elapsed()
    );

    let stats = cache.stats();
    println!(
        "database reads: {}; cache: {} hits, {} misses, {} loads, {} fallbacks",
        DB_READS.load(Ordering::Relaxed),
        stats.hits,
        stats.misses,
        stats.loads,
        stats.fallbacks
    );
    Ok(())
}
