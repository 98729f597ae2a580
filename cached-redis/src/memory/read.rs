//! The in-memory cache's read path: a live entry answers; on a miss, callers join the
//! process's one load of the key, whose value is stored unless an invalidation came while it
//! ran (then its joiners read again, as they would after a refused write-back). The load
//! stays open to new callers until its value is stored, so none finds neither; past
//! `max_load` its joiners and new callers load for themselves, and its value is not stored.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Begun, Memory};
use crate::read::failures::{Failures, SharedFailure};
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
        failures: Option<Failures<R>>,
    ) -> (R, Outcome, Duration)
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        let stats = &self.inner.stats;
        let began = self.inner.flights.now();
        // Whether a load this caller joined failed (as on the Redis path): its joiners share
        // one more load, once.
        let mut again = false;
        loop {
            if let Some(found) = memory.get(value_key) {
                match codec::decode(found.bytes()) {
                    Ok(value) => {
                        stats.note(Event::Hit, policy.name());
                        return (R::from_value(value), Outcome::Hit, Duration::ZERO);
                    }
                    Err(e) => self.undecodable(value_key, policy.name(), &e),
                }
            }
            stats.note(Event::Miss, policy.name());
            let joiner = match self.inner.flights.join_or_lead(value_key, began) {
                Role::Lead(leader) => {
                    return self
                        .lead_in_memory(memory, leader, value_key, policy, loader, failures)
                        .await;
                }
                Role::Join(joiner) => joiner,
            };
            match self
                .join(joiner, policy, loader, (true, !again), failures)
                .await
            {
                Ok(answered) => return answered,
                Err((back, failed)) => (loader, again) = (back, again || failed),
            }
        }
    }

    /// The process's one load of a key: loads (at most `max_load` on behalf of others),
    /// stores unless an invalidation came since it began, and hands the value to the callers
    /// that joined.
    pub(crate) async fn lead_in_memory<R, F>(
        &self,
        memory: &Memory,
        mut leader: Leader,
        value_key: &str,
        policy: &Policy,
        loader: F,
        failures: Option<Failures<R>>,
    ) -> (R, Outcome, Duration)
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        let stats = &self.inner.stats;
        let begun = memory.begin(value_key);
        // The load starts after everyone who began so far: its error is theirs too.
        let load_began = leader.joined();
        stats.note(Event::Load, policy.name());
        let started = Instant::now();
        let (result, abandoned) = self
            .bounded_load(&mut leader, value_key, policy, loader)
            .await;
        let took = started.elapsed();
        stats.note_load_time(policy.name(), took);
        let (value, ttl) = match result.split(policy).shared() {
            Ok(shared) => shared,
            Err((result, failed)) => {
                if failed {
                    stats.note(Event::LoadError, policy.name());
                }
                let error = failures.and_then(|f| (f.share)(&result));
                give_up_in_memory(memory, leader, &begun, load_began, (error, failed));
                return (result, Outcome::Miss, took);
            }
        };
        let encoded = self.encoded(&value, (took, None), policy, value_key);
        let (Some(bytes), false) = (encoded, abandoned) else {
            leader.finish(Shared::LoadYourself);
            return (R::from_value(value), Outcome::Miss, took);
        };
        let shared: Arc<[u8]> = Arc::from(bytes.as_slice());
        // Fresh for whoever joined before the store checked for invalidations.
        let joined = leader.joined();
        if let Some(ttl) = ttl {
            let ttl = Duration::from_millis(policy.draw_ttl_ms(ttl));
            if !memory.store(begun, bytes, ttl) {
                stats.note(Event::StaleRefused, policy.name());
                leader.finish(Shared::Reread);
                return (R::from_value(value), Outcome::StaleRefused, took);
            }
        }
        leader.finish(Shared::Value {
            bytes: shared,
            joined,
            unleased: false,
        });
        (R::from_value(value), Outcome::Miss, took)
    }

    /// Runs the loader; past `max_load` the callers that joined, and new ones, load for
    /// themselves, and this one still waits for its own loader (`true`: its value is not to be
    /// stored).
    async fn bounded_load<R, F>(
        &self,
        leader: &mut Leader,
        value_key: &str,
        policy: &Policy,
        loader: F,
    ) -> (R, bool)
    where
        F: Future<Output = R>,
    {
        let max_load = self.max_load_for(policy);
        tokio::pin!(loader);
        tokio::select! {
            biased;
            result = &mut loader => (result, false),
            () = tokio::time::sleep(max_load) => {
                tracing::warn!(
                    key = %value_key,
                    ?max_load,
                    "a load is taking longer than max_load: other callers load for themselves"
                );
                leader.abandon();
                (loader.await, true)
            }
        }
    }
}

/// A load that stores nothing: its joiners take its `error` if there is one to share (all of
/// them if no invalidation came since the load began, at `load_began`, else those whose call
/// began before), or load for themselves.
fn give_up_in_memory(
    memory: &Memory,
    mut leader: Leader,
    begun: &Begun<'_>,
    load_began: Joined,
    error: (Option<SharedFailure>, bool),
) {
    // Closed first, so that nobody joins between the check and the error.
    leader.close();
    let unchallenged = memory.still(begun).is_some();
    leader.finish(Shared::after_failure(
        error,
        unchallenged,
        load_began,
        false,
    ));
}
