//! A batch read from an in-memory cache: the live entries, the ids this call leads loaded
//! together, the rest joined on the single path.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash};

use futures_util::future::join_all;

use crate::memory::Memory;
use crate::read::flight::Began;
use crate::{Cache, CacheValue, Policy};

use super::Leading;
use super::claim::InMemory;
use super::loader::{Loader, Part, received};

impl Cache {
    /// [`Cache::parts`] in an in-memory cache: the entries live now, the ids this call leads
    /// loaded together, the rest joined on the single path.
    pub(super) async fn parts_in_memory<K, V, S, E, L, F>(
        &self,
        memory: &Memory,
        ids: &[K],
        value_keys: Vec<String>,
        began: Began,
        policy: &Policy,
        loader: &Loader<L, E>,
    ) -> Vec<Part<V>>
    where
        K: Eq + Hash + Clone,
        V: CacheValue,
        S: BuildHasher,
        L: FnMut(Vec<K>) -> F,
        F: Future<Output = Result<HashMap<K, V, S>, E>>,
    {
        let claims = value_keys
            .into_iter()
            .map(|key| self.claim_in_memory::<Option<V>>(memory, key, began, policy));
        let claims: Vec<_> = claims.collect();
        let mut leading = Leading::default();
        let answers = ids.iter().zip(claims).map(|(id, claimed)| {
            let slot = leading.slot(id, matches!(claimed, InMemory::Leads { .. }));
            async move {
                let (part, outcome, _) = match claimed {
                    InMemory::Found(value) => return Ok(value),
                    InMemory::Leads { leader, key } => {
                        let load = received(slot);
                        let lead = self.lead_in_memory(memory, leader, &key, policy, load, None);
                        lead.await
                    }
                    InMemory::Single(key) => {
                        let alone = loader.one(id.clone());
                        let single = self.fetch_memory(memory, &key, policy, alone, None);
                        Box::pin(single).await
                    }
                };
                self.inner.stats.note_call(outcome, policy.name());
                part
            }
        });
        let answers = join_all(answers);
        leading.alongside(answers, loader).await
    }
}
