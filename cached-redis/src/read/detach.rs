//! A refresh's load in a task of its own, for a loader whose future owns what it reads (the
//! expansion of a function with `stale` or `refresh = "early"` whose body borrows nothing from
//! its caller): the caller that takes the refresh's lease is answered with the entry at once,
//! as every other caller is, and the load and its write-back run on. A loader that borrows
//! cannot outlive its call: its refresh runs in the caller, who waits for it.

use std::future::Future;
use std::pin::Pin;

use crate::lease::EntryKeys;
use crate::read::failures::Failures;
use crate::read::flight::Leader;
use crate::read::lead::Load;
use crate::stored::cacheable::Cacheable;
use crate::{Cache, Policy};

/// A loader's future that may run in a task of its own. Public for `__private` only.
pub trait Detachable: Future {
    /// The future, boxed to run in a task of its own.
    fn boxed(self) -> Pin<Box<dyn Future<Output = Self::Output> + Send>>;
}

impl<F: Future + Send + 'static> Detachable for F {
    fn boxed(self) -> Pin<Box<dyn Future<Output = Self::Output> + Send>> {
        Box::pin(self)
    }
}

/// How a refresh whose loader's future is `F` runs in the background.
pub(crate) struct Detach<R, F> {
    spawn: fn(Detached<R, F>),
}

impl<R, F> Detach<R, F>
where
    R: Cacheable + Send + 'static,
    R::Value: Send,
    F: Detachable<Output = R>,
{
    /// For a loader whose future is `F`.
    pub(crate) fn new() -> Detach<R, F> {
        Detach {
            spawn: spawn::<R, F>,
        }
    }
}

impl<R, F> Detach<R, F> {
    /// Runs `refresh` in a task of its own, counted by [`Cache::settle`].
    pub(super) fn spawn(&self, refresh: Detached<R, F>) {
        (self.spawn)(refresh);
    }
}

/// A refresh under its lease, about to load.
pub(crate) struct Detached<R, F> {
    pub(super) cache: Cache,
    pub(super) leader: Leader,
    pub(super) load: Load,
    pub(super) keys: EntryKeys,
    pub(super) policy: Policy,
    pub(super) loader: F,
    pub(super) failures: Option<Failures<R>>,
    /// Whether the entry refreshed is past its TTL within `fail_safe`: a failed load backs the
    /// key off.
    pub(super) fail_safe: bool,
}

fn spawn<R, F>(refresh: Detached<R, F>)
where
    R: Cacheable + Send + 'static,
    R::Value: Send,
    F: Detachable<Output = R>,
{
    let Detached {
        cache,
        leader,
        load,
        keys,
        policy,
        loader,
        failures,
        fail_safe,
    } = refresh;
    let loader = loader.boxed();
    let spawner = cache.clone();
    // Past `max_load` the lease is let go and nothing the load returns is stored: a load no
    // caller waits for is then dropped, not awaited (nor waited for by `settle`).
    let bound = cache
        .max_load_for(&policy)
        .saturating_add(cache.inner.guard.op_timeout());
    let run = async move {
        let loaded = cache.load_under(leader, load, &keys, &policy, loader, failures);
        let Ok((_, _, _, failed)) = tokio::time::timeout(bound, loaded).await else {
            tracing::warn!(key = %keys.value, "a background refresh outlasted max_load; dropped");
            return;
        };
        if failed {
            tracing::debug!(key = %keys.value, "a background refresh's load failed");
            if fail_safe {
                cache.inner.back_off.start(&keys.value, &policy);
            }
        }
    };
    // Its body runs as it would in the caller: under the caller's `with_cache` scope, if any.
    let run = crate::global::within_scope(tracing::Instrument::in_current_span(run));
    spawner.inner.write_backs.spawn_refresh(run);
}
