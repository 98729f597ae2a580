//! `fail_safe`: an entry past its TTL (and past `stale`) is loaded as on a miss, and answers in
//! place of the load's error. After such an answer the key is backed off in this process
//! ([`back_off`](super::back_off)).

use std::future::Future;
use std::time::Duration;

use crate::lease::ValueKey;
use crate::read::failures::Failures;
use crate::read::flight::Began;
use crate::read::get::{Missed, Read, Refresh};
use crate::stats::{Event, Outcome};
use crate::stored::cacheable::Cacheable;
use crate::{Cache, Policy};

impl Cache {
    /// An entry past its TTL, within `fail_safe` only: loaded as on a miss (the lease taken
    /// while the entry still holds what this caller read), answered with the entry if the
    /// load fails, or at once while the key is backed off.
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
        let back_off = &self.inner.back_off;
        let key = value_key.as_str().to_owned();
        if back_off.holds(&key) {
            self.inner.stats.note(Event::FailSafe, policy.name());
            return (R::from_value(due.value), Outcome::FailSafe, Duration::ZERO);
        }
        let read = Read::Missed(Missed::Absent {
            corrupt: Some(due.bytes),
        });
        let missed = self.miss(value_key, began, read, policy, loader, failures);
        let (result, outcome, load_time) = missed.await;
        if !result.is_failure() {
            return (result, outcome, load_time);
        }
        back_off.start(&key, policy.name());
        self.inner.stats.note(Event::FailSafe, policy.name());
        (R::from_value(due.value), Outcome::FailSafe, load_time)
    }
}
