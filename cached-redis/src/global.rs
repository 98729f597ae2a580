//! The process-wide default cache used by attributes without `cache = ...`.

use std::sync::RwLock;

use crate::Cache;

static GLOBAL: RwLock<Option<Cache>> = RwLock::new(None);

/// Installs `cache` as the default for every `#[redis_cached]` function without its own
/// `cache = ...`, replacing any cache installed before.
///
/// Until one is installed, cached functions run their loader (and log one warning), and
/// invalidation returns [`Error::NotConfigured`](crate::Error::NotConfigured).
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cached_redis::Error> {
/// let cache = cached_redis::Cache::builder("redis://127.0.0.1:6379").build().await?;
/// cached_redis::set_global(cache);
/// assert!(cached_redis::global().is_some());
/// # Ok(()) }
/// ```
pub fn set_global(cache: Cache) {
    *GLOBAL.write().unwrap_or_else(|p| p.into_inner()) = Some(cache);
}

/// The cache installed by [`set_global`], if any.
pub fn global() -> Option<Cache> {
    GLOBAL.read().unwrap_or_else(|p| p.into_inner()).clone()
}
