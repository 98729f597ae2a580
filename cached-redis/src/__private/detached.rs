//! A cached call whose refresh runs in the background: the expansion of a function with
//! `stale` or `refresh = "early"` whose body borrows nothing from its caller.

use super::{Mode, NearChoice, warn_not_configured, wrapped};
use crate::read::detach::{Detach, Detachable};
use crate::read::failures::Failures;
use crate::{Cache, Cacheable, Key, Policy};

/// [`fetch`](super::fetch), with a refresh's load run in a task of its own: the caller that
/// takes the refresh's lease is answered with the entry at once, as the other callers are.
/// The loader's future must be `Send + 'static` ([`Detachable`]).
pub async fn fetch_detached<M, N, R, L, F>(
    _mode: M,
    near: N,
    failures: Option<Failures<M::Stored>>,
    cache: Option<&Cache>,
    key: Key,
    policy: &'static Policy,
    loader: L,
) -> R
where
    M: Mode<R> + Send + 'static,
    M::Stored: Cacheable + Send + 'static,
    <M::Stored as Cacheable>::Value: Send,
    N: NearChoice<<M::Stored as Cacheable>::Value>,
    L: FnOnce() -> F,
    F: Detachable<Output = R> + Send + 'static,
{
    let Some(cache) = cache else {
        warn_not_configured(policy.name());
        return loader().await;
    };
    let load = wrapped::<M, R, L, F>(loader);
    let detach = detach_of(&load);
    let stored = cache
        .fetch_with(&key, policy, load, near.copies(), (failures, detach))
        .await;
    M::unwrap(stored)
}

/// How the future `load` makes runs in the background.
fn detach_of<S, G, W>(_load: &G) -> Option<Detach<S, W>>
where
    S: Cacheable + Send + 'static,
    S::Value: Send,
    G: FnOnce() -> W,
    W: Detachable<Output = S>,
{
    Some(Detach::new())
}
