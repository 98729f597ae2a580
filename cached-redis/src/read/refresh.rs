//! A hit due for a refresh: an entry past its TTL but within `stale`, or one a hit drew for an
//! early refresh. One caller, in one process, refreshes it under the lease: in the background
//! where the loader's future can outlive the call ([`detach`](super::detach)), else waiting for
//! its load; every other caller is answered with the entry as read.

use std::future::Future;
use std::time::Duration;

use crate::lease::{Acquire, EntryKeys, ValueKey};
use crate::policy::Due;
use crate::read::detach::{Detach, Detached};
use crate::read::failures::Failures;
use crate::read::flight::{Began, Role, Shared};
use crate::read::get::{Read, Refresh};
use crate::read::lead::Load;
use crate::read::lease_guard::LeaseGuard;
use crate::stats::{Event, Outcome};
use crate::stored::cacheable::Cacheable;
use crate::stored::codec;
use crate::{Cache, Policy};

impl Cache {
    /// After the first GET: a refresh if the value it read is due for one, else the miss path
    /// (which also takes an entry past its TTL within `fail_safe` only: it is loaded as a miss
    /// is). The refresh is boxed: the miss path's future, which a call with Redis refusing
    /// moves, stays its own size.
    pub(super) async fn after_read<R, F>(
        &self,
        value_key: ValueKey,
        began: Began,
        read: Read<R::Value>,
        policy: &Policy,
        (loader, failures, detach): (F, Option<Failures<R>>, Option<Detach<R, F>>),
    ) -> (R, Outcome, Duration)
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        match read {
            Read::Due(due) if due.due != Due::Expired => {
                let loading = (loader, failures, detach);
                let refresh = self.refresh(value_key, began, due, policy, loading);
                Box::pin(refresh).await
            }
            read => {
                self.miss(value_key, began, read, policy, loader, failures)
                    .await
            }
        }
    }

    /// A load of the key running in this process refreshes it: this caller is answered with
    /// what it read. Else this caller leads, and takes the lease only while the entry still
    /// holds what it read: with the lease it loads as on a miss (an early refresh whose load
    /// fails is answered with the entry, still fresh); if the entry changed meanwhile, it is
    /// answered with the new value; if another process holds the lease, or Redis does not
    /// take it, with what it read. A loader that can run in the background (`detach`) does,
    /// and this caller too is answered with what it read.
    async fn refresh<R, F>(
        &self,
        value_key: ValueKey,
        began: Began,
        due: Refresh<R::Value>,
        policy: &Policy,
        (loader, failures, detach): (F, Option<Failures<R>>, Option<Detach<R, F>>),
    ) -> (R, Outcome, Duration)
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        // Backed off after a fail-safe answer: the database is not asked again yet.
        let fail_safe = policy.fail_safe().is_some() || due.fail_safe;
        if fail_safe && self.inner.back_off.holds(&value_key) {
            return self.serve_due(due, policy);
        }
        let Role::Lead(leader) = self.inner.flights.join_or_lead(&value_key, began) else {
            return self.serve_due(due, policy);
        };
        let keys = EntryKeys::for_value(value_key.into_string());
        let mut claim = LeaseGuard::claim(self, &keys, self.lock_ms_for(policy));
        let (reply, joined) = claim.acquire(Some(&due.bytes), || leader.joined()).await;
        match reply {
            Ok(Acquire::Leased) => {}
            Ok(Acquire::Value(bytes)) => {
                if let Ok(value) = codec::decode(&bytes) {
                    leader.finish(Shared::found(bytes, joined));
                    self.inner.stats.note(Event::Hit, policy.name());
                    return (R::from_value(value), Outcome::Hit, Duration::ZERO);
                }
                leader.finish(Shared::Reread);
                return self.serve_due(due, policy);
            }
            _ => {
                leader.finish(Shared::Reread);
                return self.serve_due(due, policy);
            }
        }
        self.inner.stats.note(Event::Refresh, policy.name());
        let load = Load {
            lease: Some(claim),
            outcome: Outcome::Refreshed,
        };
        if let Some(detach) = detach {
            detach.spawn(Detached {
                cache: self.clone(),
                leader,
                load,
                keys,
                policy: *policy,
                loader,
                failures,
                fail_safe: due.fail_safe && due.due != Due::Early,
            });
            return self.serve_due(due, policy);
        }
        let loaded = self.load_under(leader, load, &keys, policy, loader, failures);
        self.refreshed(loaded.await, due, policy, &keys.value)
    }

    /// A refresh's answer: its load's result, or, if the load failed, the entry it refreshed
    /// when that is still fresh (an early refresh) or within `fail_safe` (the key then backs
    /// off).
    fn refreshed<R: Cacheable>(
        &self,
        (result, outcome, load_time, failed): (R, Outcome, Duration, bool),
        due: Refresh<R::Value>,
        policy: &Policy,
        value_key: &str,
    ) -> (R, Outcome, Duration) {
        if !failed {
            return (result, outcome, load_time);
        }
        if due.due == Due::Early {
            return (R::from_value(due.value), Outcome::Hit, load_time);
        }
        if !due.fail_safe {
            return (result, outcome, load_time);
        }
        self.inner.back_off.start(value_key, policy);
        self.inner.stats.note(Event::FailSafe, policy.name());
        (R::from_value(due.value), Outcome::FailSafe, load_time)
    }

    /// Answers with a value due for a refresh that another caller makes.
    fn serve_due<R: Cacheable>(
        &self,
        due: Refresh<R::Value>,
        policy: &Policy,
    ) -> (R, Outcome, Duration) {
        let stats = &self.inner.stats;
        let outcome = if due.due == Due::Stale {
            stats.note(Event::StaleServed, policy.name());
            Outcome::Stale
        } else {
            stats.note(Event::Hit, policy.name());
            Outcome::Hit
        };
        (R::from_value(due.value), outcome, Duration::ZERO)
    }
}
