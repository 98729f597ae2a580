//! Batch reads: many ids, the near copies first and one `MGET` for the rest ([`near`],
//! [`mget`]), the misses' leases sent together ([`claim`]), and one call of the loader with
//! exactly the ids this call leads ([`loader`]); in an in-memory cache, [`memory`].
//! Every id's entry is the one a single read of its key reads and writes, under the same
//! lease: each id that is not found goes on through the single read's own steps (its
//! write-back under its lease with its own drawn TTL, a wait for a lease held elsewhere, a
//! join of a load running in this process), with its share of the batch's load as its loader.

mod claim;
mod loader;
mod memory;
mod mget;
mod near;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, Hash};

use futures_util::future::join_all;
use tokio::sync::oneshot;

use self::claim::Claimed;
use self::loader::{Loader, Part, received};
use crate::lease::{self, ValueKey};
use crate::read::flight::Began;
use crate::read::near::{Copies, NearUse};
use crate::stats::{Event, Outcome};
use crate::{Cache, CacheValue, Key, Policy};

impl Cache {
    /// Reads many ids through the cache at once: the values of the ids whose entries are
    /// stored, and for the rest one call of `loader` with exactly those ids, each value
    /// stored under its own key (rendered by `key_of`) with its own drawn TTL.
    ///
    /// Each id's entry is the one [`Cache::fetch`] reads and writes for that key, so a batch
    /// and a single read of one id share it. One `MGET` reads every id; the leases of the
    /// missing ids are sent together; an id another process is loading is waited for, not
    /// loaded twice, and one whose load runs in this process is joined. Duplicate ids are
    /// read once; no ids asks nothing.
    ///
    /// An id left out of the loader's map is not found: it is missing from the answer too, and
    /// stored as absent only with the policy's [`none_ttl`](Policy::with_none_ttl). If the
    /// loader returns an error, that error is the answer and nothing it loaded is stored.
    /// `loader` may be called again, with one id, for an id whose load falls to this call
    /// after the batch's (another process's load of it stored nothing).
    ///
    /// Near copies are neither read nor kept ([`Cache::fetch_many_near`] does both), and a
    /// policy's `fail_safe` does not answer for a failed load: the loader's error is the
    /// answer. An entry due for a `stale` or early refresh is refreshed as a single read
    /// refreshes it, its id loaded alone.
    ///
    /// ```no_run
    /// use std::collections::HashMap;
    /// use std::time::Duration;
    /// use cached_redis::{Cache, Key, Policy};
    ///
    /// # async fn load_prices(_: &[u64]) -> Result<HashMap<u64, u64>, std::io::Error> { Ok(HashMap::new()) }
    /// # async fn demo(cache: Cache) -> Result<(), Box<dyn std::error::Error>> {
    /// let policy = Policy::new("prices", Duration::from_secs(30))?;
    /// let key_of = |id: &u64| Key::builder().text("price:").part(id).build();
    /// let prices: HashMap<u64, u64> = cache
    ///     .fetch_many([7, 8, 9], key_of, &policy, |ids| async move { load_prices(&ids).await })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn fetch_many<K, V, S, E, L, F>(
        &self,
        ids: impl IntoIterator<Item = K>,
        key_of: impl Fn(&K) -> Key,
        policy: &Policy,
        loader: L,
    ) -> Result<HashMap<K, V, S>, E>
    where
        K: Eq + Hash + Clone,
        V: CacheValue,
        S: BuildHasher + Default,
        L: FnMut(Vec<K>) -> F,
        F: Future<Output = Result<HashMap<K, V, S>, E>>,
    {
        self.fetch_many_with(ids, key_of, policy, loader, None)
            .await
    }

    /// [`Cache::fetch_many`], also keeping the values it reads from Redis in this process's
    /// memory for the policy's [`near`](Policy::with_near) time on a cache with a
    /// [near cache](crate::CacheBuilder::near_cache): those ids are then answered without
    /// asking Redis, and only the rest are read (the copies are [`Cache::fetch_near`]'s, kept
    /// coherent the same way, and shared with it). Values must be `Clone`.
    ///
    /// ```no_run
    /// use std::collections::HashMap;
    /// use std::time::Duration;
    /// use cached_redis::{Cache, Key, Policy};
    ///
    /// # async fn load_flags(_: &[u64]) -> Result<HashMap<u64, bool>, std::io::Error> { Ok(HashMap::new()) }
    /// # async fn demo(cache: Cache) -> Result<(), Box<dyn std::error::Error>> {
    /// let policy = Policy::new("flags", Duration::from_secs(60))?.with_near(Duration::from_secs(5))?;
    /// let key_of = |id: &u64| Key::builder().text("flag:").part(id).build();
    /// let load = |ids: Vec<u64>| async move { load_flags(&ids).await };
    /// let flags: HashMap<u64, bool> = cache.fetch_many_near([1, 2], key_of, &policy, load).await?;
    /// # Ok(()) }
    /// ```
    pub async fn fetch_many_near<K, V, S, E, L, F>(
        &self,
        ids: impl IntoIterator<Item = K>,
        key_of: impl Fn(&K) -> Key,
        policy: &Policy,
        loader: L,
    ) -> Result<HashMap<K, V, S>, E>
    where
        K: Eq + Hash + Clone,
        V: CacheValue + Clone + Send + Sync + 'static,
        S: BuildHasher + Default,
        L: FnMut(Vec<K>) -> F,
        F: Future<Output = Result<HashMap<K, V, S>, E>>,
    {
        let copies = Some(Copies::of());
        self.fetch_many_with(ids, key_of, policy, loader, copies)
            .await
    }

    /// [`Cache::fetch_many`], with the near cache's operations for the value type if its
    /// values may be kept near.
    pub(crate) async fn fetch_many_with<K, V, S, E, L, F>(
        &self,
        ids: impl IntoIterator<Item = K>,
        key_of: impl Fn(&K) -> Key,
        policy: &Policy,
        loader: L,
        copies: Option<Copies<V>>,
    ) -> Result<HashMap<K, V, S>, E>
    where
        K: Eq + Hash + Clone,
        V: CacheValue,
        S: BuildHasher + Default,
        L: FnMut(Vec<K>) -> F,
        F: Future<Output = Result<HashMap<K, V, S>, E>>,
    {
        let ids = distinct(ids);
        if ids.is_empty() {
            return Ok(HashMap::default());
        }
        let inner = &self.inner;
        if inner.disabled {
            for _ in &ids {
                inner.stats.note(Event::Miss, policy.name());
                inner.stats.note_call(Outcome::Disabled, policy.name());
            }
            return load_uncached(ids, loader).await;
        }
        let span = tracing::debug_span!("cached_batch", function = policy.name(), ids = ids.len());
        let namespace = &inner.namespace;
        let value_keys = ids
            .iter()
            .map(|id| lease::value_key(namespace, &key_of(id)));
        let value_keys = value_keys.map(ValueKey::into_string).collect();
        let loader = Loader::new(loader);
        let parts = self.parts(&ids, value_keys, policy, &loader, copies);
        let parts = tracing::Instrument::instrument(parts, span).await;
        match loader.into_error() {
            Some(error) => Err(error),
            None => Ok(found(ids, parts)),
        }
    }

    /// Each id's part: what its entry held, or its share of the loads this call ran or
    /// waited for.
    async fn parts<K, V, S, E, L, F>(
        &self,
        ids: &[K],
        value_keys: Vec<String>,
        policy: &Policy,
        loader: &Loader<L, E>,
        copies: Option<Copies<V>>,
    ) -> Vec<Part<V>>
    where
        K: Eq + Hash + Clone,
        V: CacheValue,
        S: BuildHasher,
        L: FnMut(Vec<K>) -> F,
        F: Future<Output = Result<HashMap<K, V, S>, E>>,
    {
        let began = self.inner.flights.now();
        if let Some(memory) = &self.inner.memory {
            return self
                .parts_in_memory(memory, ids, value_keys, began, policy, loader)
                .await;
        }
        let near = NearUse::new(self.inner.near.as_ref(), copies, policy.near());
        let (mut parts, asked) = self.near_first(near.as_ref(), value_keys, policy);
        let expiry = asked.tickets.iter().any(Option::is_some);
        let reads = self.read_many::<Option<V>>(&asked.keys, policy, expiry);
        let reads = reads.await;
        let missing = self.hits_first(&mut parts, asked, reads, near.as_ref(), policy);
        if missing.is_empty() {
            return parts;
        }
        let claims = missing
            .into_iter()
            .map(|(i, key, read)| async move { (i, self.claim(key, began, read, policy).await) });
        let claims = join_all(claims).await;
        let mut leading = Leading::default();
        let answers = claims.into_iter().map(|(i, claimed)| {
            let id = &ids[i];
            let slot = leading.slot(id, matches!(claimed, Claimed::Leads { .. }));
            async move {
                (
                    i,
                    self.answer(id, claimed, slot, began, policy, loader).await,
                )
            }
        });
        let answers = join_all(answers);
        let answered = leading.alongside(answers, loader).await;
        for (i, part) in answered {
            parts[i] = part;
        }
        parts
    }

    /// One id's part once its lease script answered: found, loaded with the batch under its
    /// lease and written back, or answered as a single read would be.
    async fn answer<K, V, S, E, L, F>(
        &self,
        id: &K,
        claimed: Claimed<Option<V>>,
        slot: oneshot::Receiver<Part<V>>,
        began: Began,
        policy: &Policy,
        loader: &Loader<L, E>,
    ) -> Part<V>
    where
        K: Eq + Hash + Clone,
        V: CacheValue,
        S: BuildHasher,
        L: FnMut(Vec<K>) -> F,
        F: Future<Output = Result<HashMap<K, V, S>, E>>,
    {
        let (part, outcome) = match claimed {
            Claimed::Found(value) => return Ok(value),
            Claimed::Leads { leader, load, keys } => {
                let load = self.load_under(leader, load, &keys, policy, received(slot), None);
                let (part, outcome, _, _) = load.await;
                (part, outcome)
            }
            Claimed::Waits {
                leader,
                keys,
                missed,
            } => {
                let alone = loader.one(id.clone());
                let (part, outcome, _) =
                    self.lead(leader, &keys, policy, alone, missed, None).await;
                (part, outcome)
            }
            Claimed::Single { value_key, read } => {
                let loading = (loader.one(id.clone()), None, None);
                let value_key = ValueKey::owned(value_key);
                let single = self.after_read(value_key, began, read, policy, loading);
                let (part, outcome, _) = Box::pin(single).await;
                (part, outcome)
            }
        };
        self.inner.stats.note_call(outcome, policy.name());
        part
    }
}

/// The ids a batch leads, in order, each with the slot its part is sent to.
struct Leading<K, V> {
    ids: Vec<K>,
    slots: Vec<oneshot::Sender<Part<V>>>,
}

impl<K, V> Default for Leading<K, V> {
    fn default() -> Self {
        Leading {
            ids: Vec::new(),
            slots: Vec::new(),
        }
    }
}

impl<K: Clone, V> Leading<K, V> {
    /// The slot an id's part arrives in: filled by the batch's load if this call `leads` the
    /// id, else never (its part comes from its own path).
    fn slot(&mut self, id: &K, leads: bool) -> oneshot::Receiver<Part<V>> {
        let (sender, receiver) = oneshot::channel();
        if leads {
            self.ids.push(id.clone());
            self.slots.push(sender);
        }
        receiver
    }

    /// Runs `answers` and the one load of the ids this call leads together, the answers
    /// polled first: each leading id's load is registered (its flight's start, an in-memory
    /// entry's version) before the loader is first polled and reads anything.
    async fn alongside<T, L, E, S, F>(
        self,
        answers: impl Future<Output = T>,
        loader: &Loader<L, E>,
    ) -> T
    where
        K: Eq + Hash,
        S: BuildHasher,
        L: FnMut(Vec<K>) -> F,
        F: Future<Output = Result<HashMap<K, V, S>, E>>,
    {
        let load = loader.many(self.ids, self.slots);
        let (answered, ()) = tokio::join!(biased; answers, load);
        answered
    }
}

/// The loader's answer for `ids` (distinct), without a cache: the ids asked for only, as a
/// cache's answer would hold.
pub(crate) async fn load_uncached<K, V, S, E, F>(
    ids: Vec<K>,
    loader: impl FnOnce(Vec<K>) -> F,
) -> Result<HashMap<K, V, S>, E>
where
    K: Eq + Hash + Clone,
    S: BuildHasher + Default,
    F: Future<Output = Result<HashMap<K, V, S>, E>>,
{
    let mut found = loader(ids.clone()).await?;
    let asked: HashSet<K> = ids.into_iter().collect();
    found.retain(|id, _| asked.contains(id));
    Ok(found)
}

/// The ids in their first order, each once.
pub(crate) fn distinct<K: Eq + Hash + Clone>(ids: impl IntoIterator<Item = K>) -> Vec<K> {
    let mut seen = HashSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// The answer: each id with a value.
fn found<K, V, S>(ids: Vec<K>, parts: Vec<Part<V>>) -> HashMap<K, V, S>
where
    K: Eq + Hash,
    S: BuildHasher + Default,
{
    let found = ids.into_iter().zip(parts);
    found
        .filter_map(|(id, part)| Some((id, part.ok()??)))
        .collect()
}
