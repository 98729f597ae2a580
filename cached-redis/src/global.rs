//! The default cache of attributes without `cache = ...`: one for the process, which a future
//! can override for itself (a test's own cache).

use std::future::Future;
use std::sync::RwLock;

use crate::Cache;

static GLOBAL: RwLock<Option<Cache>> = RwLock::new(None);

tokio::task_local! {
    static SCOPED: Cache;
}

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

/// The default cache of functions without `cache = ...`, if any: the one [`with_cache`] set
/// for the current future, else the one installed by [`set_global`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let seen = cached_redis::with_cache(cached_redis::Cache::disabled(), async {
///     cached_redis::global().is_some_and(|cache| cache.is_disabled())
/// });
/// assert!(seen.await, "with_cache's cache, for this future");
/// # }
/// ```
pub fn global() -> Option<Cache> {
    SCOPED.try_with(Cache::clone).ok().or_else(installed)
}

/// The cache installed by [`set_global`].
fn installed() -> Option<Cache> {
    GLOBAL.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Removes the cache installed by [`set_global`] and returns it: cached functions without their
/// own `cache = ...` run their loader again.
///
/// ```
/// cached_redis::set_global(cached_redis::Cache::disabled());
/// assert!(cached_redis::take_global().is_some());
/// assert!(cached_redis::global().is_none());
/// ```
pub fn take_global() -> Option<Cache> {
    GLOBAL.write().unwrap_or_else(|p| p.into_inner()).take()
}

/// Runs `future` with `cache` as the default of every `#[redis_cached]` function it calls
/// without its own `cache = ...`, in place of the global one, for this future only (tasks it
/// spawns do not inherit it). Tests that run side by side in one process each get their own
/// cache this way; the process-wide [`set_global`] would be shared by all of them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// #[cached_redis::redis_cached(key = "answer", ttl = "60s")]
/// async fn answer() -> u32 {
///     42
/// }
///
/// let answered = cached_redis::with_cache(cached_redis::Cache::disabled(), answer()).await;
/// assert_eq!(answered, 42);
/// # }
/// ```
pub async fn with_cache<F: Future>(cache: Cache, future: F) -> F::Output {
    SCOPED.scope(cache, future).await
}
