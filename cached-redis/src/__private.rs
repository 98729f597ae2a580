//! Not public API: what `#[redis_cached]` expansions call. Everything with behaviour lives in
//! the rest of the crate; these are thin adapters.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

pub use crate::global::global;
pub use crate::{Jitter, Key, Plain, Policy};
pub use core::time::Duration;

use crate::{Cache, Cacheable, Error};

/// A cached call: through `cache` if there is one, otherwise straight to the loader.
pub async fn fetch<R: Cacheable, F: Future<Output = R>>(
    cache: Option<&Cache>,
    key: Key,
    policy: &'static Policy,
    loader: F,
) -> R {
    match cache {
        Some(cache) => cache.fetch(&key, policy, loader).await,
        None => {
            warn_not_configured(policy.name());
            loader.await
        }
    }
}

/// Names the output type of a plain function's body, so errors in it point at the user's code.
pub async fn plain<T, F: Future<Output = T>>(body: F) -> Plain<T> {
    Plain(body.await)
}

/// A generated `invalidate_*` call.
pub async fn invalidate(cache: Option<&Cache>, key: Key) -> Result<bool, Error> {
    match cache {
        Some(cache) => cache.invalidate(&key).await,
        None => Err(Error::NotConfigured),
    }
}

/// A key renderer for a template.
pub fn key() -> crate::KeyBuilder {
    Key::builder()
}

fn warn_not_configured(function: &'static str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            function,
            "no cache configured (call cached_redis::set_global at start-up or pass `cache = ...`): running uncached"
        );
    }
}
