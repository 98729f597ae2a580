//! The default cache of attributes without `cache = ...`: one for the process, which a future
//! can override for itself (a test's own cache), and a test can override for the whole process
//! while it holds a guard.

use std::future::Future;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Cache;

/// The process's defaults: the one [`set_global`] installed, and the live overrides of
/// [`override_global`], newest last, each under the id of its guard.
struct Defaults {
    installed: Option<Cache>,
    overrides: Vec<(u64, Cache)>,
}

static GLOBAL: RwLock<Defaults> = RwLock::new(Defaults {
    installed: None,
    overrides: Vec::new(),
});

/// Ids of override guards.
static NEXT_OVERRIDE: AtomicU64 = AtomicU64::new(0);

fn read() -> std::sync::RwLockReadGuard<'static, Defaults> {
    GLOBAL.read().unwrap_or_else(|p| p.into_inner())
}

fn write() -> std::sync::RwLockWriteGuard<'static, Defaults> {
    GLOBAL.write().unwrap_or_else(|p| p.into_inner())
}

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
    write().installed = Some(cache);
}

/// The default cache of functions without `cache = ...`, if any: the one [`with_cache`] set
/// for the current future, else the newest live [`override_global`], else the one installed by
/// [`set_global`].
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

/// The newest live override, else the cache installed by [`set_global`].
fn installed() -> Option<Cache> {
    let defaults = read();
    match defaults.overrides.last() {
        Some((_, cache)) => Some(cache.clone()),
        None => defaults.installed.clone(),
    }
}

/// Removes the cache installed by [`set_global`] and returns it: cached functions without their
/// own `cache = ...` run their loader again (a live [`override_global`] stays in force).
///
/// ```
/// cached_redis::set_global(cached_redis::Cache::disabled());
/// assert!(cached_redis::take_global().is_some());
/// assert!(cached_redis::global().is_none());
/// ```
pub fn take_global() -> Option<Cache> {
    write().installed.take()
}

/// Runs `future` with `cache` as the default of every `#[redis_cached]` function it calls
/// without its own `cache = ...`, in place of the global one, for this future only. Tests that
/// run side by side in one process each get their own cache this way; the process-wide
/// [`set_global`] would be shared by all of them.
///
/// Tasks the future spawns do **not** inherit it (it is a task-local): a server started
/// inside it (axum runs each connection in a task of its own) or a `tokio::spawn` reads the
/// process's default. For those, hold an [`override_global`].
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

/// `future`, under the [`with_cache`] scope of the task that calls this, if there is one: for
/// work spawned on a caller's behalf.
pub(crate) fn within_scope<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let scoped = SCOPED.try_with(Cache::clone).ok();
    async move {
        match scoped {
            Some(cache) => SCOPED.scope(cache, future).await,
            None => future.await,
        }
    }
}

/// Makes `cache` the default of every `#[redis_cached]` function without its own `cache = ...`,
/// in **every task of the process** (spawned tasks, a server's handlers), until the returned
/// guard is dropped. Meant for tests: a test that starts a server calling cached functions
/// holds `override_global(Cache::disabled())` (or a cache on a Redis of its own), and nothing
/// reaches the Redis that [`set_global`] points at.
///
/// What [`global`] answers, first match wins: the [`with_cache`] of the current future, the
/// newest live override, the cache of [`set_global`] (which an override does not change: it
/// is the default again once no override is live).
///
/// The rule for nesting and for tests side by side:
/// - Overrides stack. Each guard removes only its own override when dropped, so the newest
///   live one is in force: dropping the guards in reverse order restores each previous default,
///   and dropping an outer one first leaves the inner one in force until it goes too.
/// - An override is process-wide, so it is seen by tests running beside it in the same process
///   (cargo runs the tests of one file on several threads). Put tests that override in an
///   integration-test file of their own (its own process), or serialise them (a `static`
///   `tokio::sync::Mutex<()>` that each such test locks first); tests that only use
///   [`with_cache`] are not affected, since a `with_cache` wins over any override.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use cached_redis::Cache;
///
/// #[cached_redis::redis_cached(key = "answer", ttl = "60s")]
/// async fn answer() -> u32 {
///     42
/// }
///
/// let guard = cached_redis::override_global(Cache::disabled());
/// // A spawned task sees it too (with_cache's would not).
/// let spawned = tokio::spawn(async { cached_redis::global() }).await.unwrap();
/// assert!(spawned.is_some_and(|cache| cache.is_disabled()));
/// assert_eq!(tokio::spawn(answer()).await.unwrap(), 42);
/// drop(guard);
/// assert!(cached_redis::global().is_none(), "the previous default again: none here");
/// # }
/// ```
pub fn override_global(cache: Cache) -> GlobalOverride {
    let id = NEXT_OVERRIDE.fetch_add(1, Ordering::Relaxed);
    write().overrides.push((id, cache));
    GlobalOverride { id }
}

/// The guard of an [`override_global`]: the override is in force, process-wide, until it is
/// dropped.
#[derive(Debug)]
#[must_use = "the override ends when the guard is dropped: bind it (`let _guard = ...`), not `_`"]
pub struct GlobalOverride {
    id: u64,
}

impl Drop for GlobalOverride {
    fn drop(&mut self) {
        let removed = {
            let mut defaults = write();
            let at = defaults.overrides.iter().position(|(id, _)| *id == self.id);
            at.map(|at| defaults.overrides.remove(at))
        };
        // The cache is dropped outside the lock.
        drop(removed);
    }
}
