//! `fail_safe`: an entry past its TTL (and past `stale`) is loaded as on a miss, and answers in
//! place of the load's error. After such an answer the key is backed off in this process
//! ([`back_off`](super::back_off)).

use std::future::Future;
use std::time::Duration;

use crate::lease::{EntryKeys, ValueKey};
use crate::read::failures::Failures;
use crate::read::flight::{self, Began, Role, Shared};
use crate::read::get::{Missed, Refresh};
use crate::stats::{Event, Outcome};
use crate::stored::cacheable::Cacheable;
use crate::stored::codec;
use crate::{Cache, Policy};

impl Cache {
    /// An entry past its TTL, within `fail_safe` only. Loaded as on a miss by one caller in
    /// this process (the lease taken while the entry still holds what it read); the others
    /// wait for that load. If it fails, each answers with the entry it read instead, and the
    /// key backs off; a load that was revoked or cancelled is led again.
    pub(super) async fn expired<R, F>(
        &self,
        value_key: ValueKey,
        began: Began,
        due: Refresh<R::Value>,
        policy: &Policy,
        loader: F,
        failures: Option<Failures<R>>,
    ) -> (R, Outcome, Duration)
    where
        R: Cacheable,
        F: Future<Output = R>,
    {
        if self.inner.back_off.holds(&value_key) {
            return self.fail_safe_answer(due.value, policy, Duration::ZERO);
        }
        loop {
            let joiner = match self.inner.flights.join_or_lead(&value_key, began) {
                Role::Join(joiner) => joiner,
                Role::Lead(leader) => {
                    let keys = EntryKeys::for_value(value_key.as_str().to_owned());
                    let missed = Missed::Absent {
                        corrupt: Some(due.bytes),
                    };
                    let led = self.lead(leader, &keys, policy, loader, missed, failures);
                    let (result, outcome, load_time) = led.await;
                    if !result.is_failure() {
                        return (result, outcome, load_time);
                    }
                    self.inner.back_off.start(&keys.value, policy);
                    return self.fail_safe_answer(due.value, policy, load_time);
                }
            };
            self.inner.stats.note(Event::Coalesced, policy.name());
            match flight::wait(joiner, true).await {
                Some(Shared::Value { bytes, .. }) => {
                    if let Ok(value) = codec::decode(&bytes) {
                        return (R::from_value(value), Outcome::Waited, Duration::ZERO);
                    }
                }
                Some(Shared::Failed { .. } | Shared::FailedUnshared) => {
                    return self.fail_safe_answer(due.value, policy, Duration::ZERO);
                }
                Some(Shared::LoadYourself) => {
                    let (result, outcome, load_time) = self.load_alone(policy, loader, true).await;
                    if !result.is_failure() {
                        return (result, outcome, load_time);
                    }
                    return self.fail_safe_answer(due.value, policy, load_time);
                }
                Some(Shared::Reread) | None => {}
            }
        }
    }

    /// Answers with an entry past its TTL in place of a failed load's error.
    fn fail_safe_answer<R: Cacheable>(
        &self,
        value: R::Value,
        policy: &Policy,
        load_time: Duration,
    ) -> (R, Outcome, Duration) {
        self.inner.stats.note(Event::FailSafe, policy.name());
        (R::from_value(value), Outcome::FailSafe, load_time)
    }
}
