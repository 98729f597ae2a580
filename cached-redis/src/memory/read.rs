//! The in-memory cache's read path: a live entry answers; on a miss, callers join the
//! process's one load of the key, whose value is stored unless an invalidation came while it
//! ran (then its joiners read again, as they would after a refused write-back).

use std::future::Future;
use std::time::{Duration, Instant};

use super::Memory;
use crate::read::flight::{Joined, Leader, Role, Shared};
use crate::stats::{Event, Outcome};
use crate::stored::cacheable::Cacheable;
use crate::stored::codec;
use crate::{Cache, Policy};

impl Cache {
    /// A call through the in-memory cache.
    pub(crate) async fn fetch_memory<R, F>(
        &self,
        memory: &Memory,
        value_key: &str,
        policy: &Policy,
        mut loader: F,
    ) -> (R, Outcome, Duration)
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        let stats = &self.inner.stats;
        loop {
            if let Some(found) = memory.get(value_key)
                && let Ok(value) = codec::decode(found.bytes())
            {
                stats.note(Event::Hit, policy.name());
                return (R::from_value(value), Outcome::Hit, Duration::ZERO);
            }
            stats.note(Event::Miss, policy.name());
            let joiner = match self.inner.flights.join_or_lead(value_key) {
                Role::Lead(leader) => {
                    return self
                        .lead_in_memory(memory, leader, value_key, policy, loader)
                        .await;
                }
                Role::Join(joiner) => joiner,
            };
            match self.join(joiner, policy, loader, true).await {
                Ok(answered) => return answered,
                Err(again) => loader = again,
            }
        }
    }

    /// The process's one load of a key: loads, stores unless an invalidation came since it
    /// started, and hands the value to the callers that joined.
    async fn lead_in_memory<R, F>(
        &self,
        memory: &Memory,
        mut leader: Leader<'_>,
        value_key: &str,
        policy: &Policy,
        loader: F,
    ) -> (R, Outcome, Duration)
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        let stats = &self.inner.stats;
        let ticket = memory.ticket(value_key);
        let joined = leader.joined();
        stats.note(Event::Load, policy.name());
        let started = Instant::now();
        let result = loader.await;
        let took = started.elapsed();
        stats.note_load_time(policy.name(), took);
        leader.close();
        let (value, ttl) = match result.split(policy).shared() {
            Ok(shared) => shared,
            Err((result, failed)) => {
                if failed {
                    stats.note(Event::LoadError, policy.name());
                }
                leader.finish(Shared::LoadYourself);
                return (result, Outcome::Miss, took);
            }
        };
        let Some(bytes) = self.encoded(&value, took, policy, value_key) else {
            leader.finish(Shared::LoadYourself);
            return (R::from_value(value), Outcome::Miss, took);
        };
        let shared: std::sync::Arc<[u8]> = std::sync::Arc::from(bytes.as_slice());
        let stored = match ttl {
            Some(ttl) => {
                let ttl = Duration::from_millis(policy.draw_ttl_ms(ttl));
                Some(memory.store(value_key, ticket, bytes, ttl))
            }
            None => None,
        };
        if stored == Some(false) {
            stats.note(Event::StaleRefused, policy.name());
            leader.finish(Shared::Reread);
            return (R::from_value(value), Outcome::StaleRefused, took);
        }
        let joined = if stored == Some(true) {
            Joined::EVERYONE
        } else {
            joined
        };
        leader.finish(Shared::Value {
            bytes: shared,
            joined,
            unleased: false,
        });
        (R::from_value(value), Outcome::Miss, took)
    }
}
