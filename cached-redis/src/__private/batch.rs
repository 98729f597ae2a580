//! What a `batch` function's expansion calls: [`fetch_batch`] reads its ids through
//! [`Cache::fetch_many`], [`invalidate_batch`] removes them; [`BatchReturn`] is how its return
//! type (a map, or a `Result` of one) is taken apart and put back.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hash};

use super::NearChoice;
use crate::{Cache, CacheValue, Error, Key, Policy};

/// A `batch` function's return: `HashMap<K, V>` or `Result<HashMap<K, V>, E>` (aliases
/// included).
#[diagnostic::on_unimplemented(
    message = "a `batch` function returns the values it found by id: `{Self}` is not a map",
    label = "not a `HashMap<K, V>` or a `Result<HashMap<K, V>, E>`",
    note = "return `Result<HashMap<K, V>, E>` (or `HashMap<K, V>`), with an entry for each id found"
)]
pub trait BatchReturn: Sized {
    /// The map's key: one id.
    type Id;
    /// The map's value: one id's cached value.
    type Value;
    /// The map's hasher.
    type Hasher;
    /// The error (`Infallible` for a bare map).
    type Error;
    /// The map, or the error.
    fn into_map(self) -> Found<Self>;
    /// Back from the map or the error.
    fn from_map(map: Found<Self>) -> Self;
}

/// What a [`BatchReturn`] holds: the map of what was found, or the error.
pub type Found<T> = Result<
    HashMap<<T as BatchReturn>::Id, <T as BatchReturn>::Value, <T as BatchReturn>::Hasher>,
    <T as BatchReturn>::Error,
>;

impl<K, V, S, E> BatchReturn for Result<HashMap<K, V, S>, E> {
    type Id = K;
    type Value = V;
    type Hasher = S;
    type Error = E;

    fn into_map(self) -> Self {
        self
    }

    fn from_map(map: Self) -> Self {
        map
    }
}

impl<K, V, S> BatchReturn for HashMap<K, V, S> {
    type Id = K;
    type Value = V;
    type Hasher = S;
    type Error = Infallible;

    fn into_map(self) -> Result<Self, Infallible> {
        Ok(self)
    }

    fn from_map(map: Result<Self, Infallible>) -> Self {
        match map {
            Ok(map) => map,
            Err(never) => match never {},
        }
    }
}

/// A `batch` function's call: its ids read through `cache` (from near copies too, with
/// [`KeepNear`](super::KeepNear)), the body (`loader`) called with those not found.
pub async fn fetch_batch<T, N, I, KF, L, F>(
    cache: Option<&Cache>,
    policy: &'static Policy,
    near: N,
    ids: I,
    key_of: KF,
    mut loader: L,
) -> T
where
    T: BatchReturn,
    I: IntoIterator<Item = T::Id>,
    KF: Fn(&T::Id) -> Key,
    T::Id: Eq + Hash + Clone,
    T::Value: CacheValue,
    T::Hasher: BuildHasher + Default,
    N: NearChoice<T::Value>,
    L: FnMut(Vec<T::Id>) -> F,
    F: Future<Output = T>,
{
    let mut load = move |ids| {
        let load = loader(ids);
        async move { load.await.into_map() }
    };
    let Some(cache) = cache else {
        super::warn_not_configured(policy.name());
        let ids = crate::read::batch::distinct(ids);
        return T::from_map(crate::read::batch::load_uncached(ids, &mut load).await);
    };
    let copies = near.copies();
    T::from_map(
        cache
            .fetch_many_with(ids, key_of, policy, load, copies)
            .await,
    )
}

/// `invalidate_<fn>(ids)` of a `batch` function: every id's entry removed.
pub async fn invalidate_batch<K>(
    cache: Option<&Cache>,
    ids: impl IntoIterator<Item = K>,
    key_of: impl Fn(&K) -> Key,
) -> Result<u64, Error> {
    match cache {
        Some(cache) => {
            let keys = ids.into_iter().map(|id| key_of(&id));
            cache.invalidate_many(keys).await
        }
        None => Err(Error::NotConfigured),
    }
}
