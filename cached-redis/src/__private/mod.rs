//! Not public API: what `#[redis_cached]` expansions call. Everything with behaviour lives in
//! the rest of the crate; these are thin adapters. What else the expansion names is in the
//! child modules, re-exported here where the expansion names it: how a return type is cached
//! (`returns`), what `update_*` changes (`update_target`), the key renderers (`keys`), a
//! derived key's function path (`paths`), the compile-time checks (`checks`), the policy
//! (`policy`), whether values are kept near (`near`), whether a failed load's joiners
//! share its error (`failures`) and a `batch` function's calls (`batch`).

mod batch;
mod checks;
mod detached;
mod failures;
mod keys;
mod near;
mod paths;
mod policy;
mod returns;
mod update_target;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

pub use crate::global::global;
pub use crate::read::detach::Detachable;
pub use crate::{Codec, Compression, Jitter, Key, Plain, Policy};
pub use batch::{BatchReturn, Found, fetch_batch, invalidate_batch};
pub use checks::{
    FailSafeApplies, HelpersGenerated, InTraitImpl, NoneTtlApplies, Probe, ProbeKeyPart,
    ProbeOther, fail_safe_applies, helpers_generated, none_ttl_applies, zstd_enabled,
};
pub use core::time::Duration;
pub use detached::fetch_detached;
pub use failures::{FailureProbe, Failures, OwnFailures, ShareFailures};
pub use keys::{DerivedKeyBuilder, DerivedKeyPart, derived_key, key};
pub use near::{
    Copies, KeepNear, KeepsInner, KeepsNothing, KeepsPlain, NearChoice, NearProbe, NotNear,
    near_applied_since,
};
pub use paths::{function_path, helper_function_path, update_function_path};
pub use policy::{checked_policy, policy, policy_at_run_time};
pub use returns::{Direct, Mode, PlainReturn, Returns, Wrapped};
pub use update_target::UpdateTarget;

use crate::{Cache, Cacheable, Error, KeyFamily, KeyFamilyBuilder};

/// A cached call: through `cache` if there is one, otherwise straight to the loader. The
/// loader comes as a closure that makes its future: a call answered from the cache (a near
/// hit above all) never builds it, nor moves it from caller to callee. `failures`: whether the
/// callers that join a failed load take a clone of its error ([`FailureProbe`]).
pub async fn fetch<M: Mode<R>, N, R, L, F>(
    _mode: M,
    near: N,
    failures: Option<Failures<M::Stored>>,
    cache: Option<&Cache>,
    key: Key,
    policy: &'static Policy,
    loader: L,
) -> R
where
    M::Stored: Cacheable,
    N: NearChoice<<M::Stored as Cacheable>::Value>,
    L: FnOnce() -> F,
    F: Future<Output = R>,
{
    let Some(cache) = cache else {
        warn_not_configured(policy.name());
        return loader().await;
    };
    let loading = (failures, None);
    let load = wrapped::<M, R, L, F>(loader);
    let stored = cache
        .fetch_with(&key, policy, load, near.copies(), loading)
        .await;
    M::unwrap(stored)
}

/// The loader, its result wrapped as the mode stores it. Its future is made when the loader
/// is called (an `async fn`'s call does no work until polled), so it holds the loader's
/// future and not the loader.
fn wrapped<M: Mode<R>, R, L, F>(loader: L) -> impl FnOnce() -> WrapLoad<M, F>
where
    L: FnOnce() -> F,
    F: Future<Output = R>,
{
    move || WrapLoad {
        load: loader(),
        mode: std::marker::PhantomData,
    }
}

pin_project_lite::pin_project! {
    /// A loader's future whose result is wrapped as the mode `M` stores it.
    struct WrapLoad<M, F> {
        #[pin]
        load: F,
        mode: std::marker::PhantomData<fn() -> M>,
    }
}

impl<M: Mode<R>, R, F: Future<Output = R>> Future for WrapLoad<M, F> {
    type Output = M::Stored;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<M::Stored> {
        self.project().load.poll(cx).map(M::wrap)
    }
}

/// A cached call of a function with `cache_if`: a value for which `keep` is false is returned
/// (and shared with callers that joined its load) but not stored. `keep` comes after the
/// loader, so that a closure without a type annotation is checked once the value's type is
/// known.
pub async fn fetch_if<M: Mode<R>, N, R, L, F, K>(
    _mode: M,
    near: N,
    cache: Option<&Cache>,
    key: Key,
    policy: &'static Policy,
    loader: L,
    keep: K,
) -> R
where
    M::Stored: Cacheable,
    N: NearChoice<<M::Stored as Cacheable>::Value>,
    K: Fn(&<M::Stored as Cacheable>::Value) -> bool,
    L: FnOnce() -> F,
    F: Future<Output = R>,
{
    match cache {
        Some(cache) => {
            let load = move || async move {
                let stored = M::wrap(loader().await);
                crate::stored::cacheable::Conditional::new(stored, keep)
            };
            // With `cache_if`, the joiners of a failed load run their own loaders.
            let stored = cache
                .fetch_with(&key, policy, load, near.copies(), (None, None))
                .await;
            M::unwrap(stored.into_inner())
        }
        None => {
            warn_not_configured(policy.name());
            loader().await
        }
    }
}

/// The first step of a generated `refresh_*`: the entry goes, and any load in flight with it.
/// If Redis cannot be told, the call that follows finds Redis in trouble too, and its loader
/// answers. With `invalidate_replicas`, a removal the replicas did not confirm is the caller's
/// `Err(NotReplicated)`, before anything loads: a replica may still hold the old value, and a
/// refresh that answered its new one would say otherwise.
pub async fn revoke(cache: Option<&Cache>, key: &Key) -> Result<(), Error> {
    let Some(cache) = cache else {
        return Ok(());
    };
    match cache.invalidate(key).await {
        Ok(_) => Ok(()),
        Err(error @ Error::NotReplicated { .. }) => Err(error),
        Err(error) => {
            tracing::debug!(key = %key, %error, "refresh could not remove the entry first");
            Ok(())
        }
    }
}

/// A generated `invalidate_*` call.
pub async fn invalidate(cache: Option<&Cache>, key: Key) -> Result<bool, Error> {
    match cache {
        Some(cache) => cache.invalidate(&key).await,
        None => Err(Error::NotConfigured),
    }
}

/// A generated `invalidate_all_*` call.
pub async fn invalidate_family(cache: Option<&Cache>, family: KeyFamily) -> Result<u64, Error> {
    match cache {
        Some(cache) => cache.invalidate_family(&family).await,
        None => Err(Error::NotConfigured),
    }
}

/// Starts the family a generated `invalidate_all_*` removes.
pub fn family() -> KeyFamilyBuilder {
    KeyFamily::builder()
}

/// A generated `update_*` call.
pub async fn update<R: UpdateTarget<T>, T>(
    cache: Option<&Cache>,
    key: Key,
    policy: &Policy,
    mut change: impl FnMut(&mut T),
) -> Result<bool, Error> {
    let Some(cache) = cache else {
        return Err(Error::NotConfigured);
    };
    let apply = |stored: &mut R::Stored| R::target(stored).map(&mut change).is_some();
    cache.update_with(&key, Some(policy), apply).await
}

/// How many loads, write-backs and updates are in flight and how many channels are waited
/// on, in this process: for tests that check a cache leaves nothing behind.
pub fn in_flight(cache: &crate::Cache) -> (usize, usize) {
    let inner = &cache.inner;
    let running = inner.flights.len() + inner.write_backs.len() + inner.updates.len();
    (running, inner.wakeups.channels())
}

/// Says once per process that a cached function runs uncached for want of a cache: through
/// `tracing` when a subscriber listens, on standard error otherwise, where a program that set
/// up no logging still shows it.
fn warn_not_configured(function: &'static str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if WARNED.swap(true, Ordering::Relaxed) {
        return;
    }
    let why = "no cache configured (call cached_redis::set_global at start-up or pass `cache = ...`): running uncached";
    if tracing::dispatcher::has_been_set() {
        tracing::warn!(function, "{why}");
    } else {
        eprintln!("cached-redis: `{function}`: {why}");
    }
}
