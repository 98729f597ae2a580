//! In-process single flight: one load per key per process; later callers join it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// What a load's leader hands to the callers that joined it.
#[derive(Debug, Clone)]
pub(crate) enum Shared {
    /// The stored form of the value; each joiner decodes its own copy. `verified` is true when
    /// the value was read from Redis, or loaded under a lease that was still held when the load
    /// ended, so no invalidation can have come between the load and a joiner's arrival.
    Value { bytes: Arc<[u8]>, verified: bool },
    /// An invalidation raced the load: read again.
    Reread,
    /// The load failed; its error belongs to the leader's caller. Run the loader yourself.
    LoadYourself,
}

type Slot = Arc<watch::Sender<Option<Shared>>>;

/// The loads in flight in this process, by value key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, Slot>>,
}

/// A caller's part in a flight.
#[derive(Debug)]
pub(crate) enum Role<'a> {
    Lead(Leader<'a>),
    Join(watch::Receiver<Option<Shared>>),
}

impl Flights {
    pub(crate) fn join_or_lead(&self, key: &str) -> Role<'_> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = map.get(key) {
            return Role::Join(slot.subscribe());
        }
        let slot: Slot = Arc::new(watch::Sender::new(None));
        map.insert(key.to_owned(), slot.clone());
        Role::Lead(Leader {
            flights: self,
            key: key.to_owned(),
            slot,
            registered: true,
        })
    }

    /// How many loads are in flight (for tests of cleanup).
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The caller running a load. Dropping it (cancellation, panic) removes the flight and closes
/// it, so joiners start over instead of waiting.
#[derive(Debug)]
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: String,
    slot: Slot,
    registered: bool,
}

impl Leader<'_> {
    /// Stops new callers from joining; those already joined still get [`Leader::finish`]'s result.
    pub(crate) fn close(&mut self) {
        if !self.registered {
            return;
        }
        self.registered = false;
        let mut map = self.flights.map.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            map.remove(&self.key);
        }
    }

    /// Hands the result to the joiners.
    pub(crate) fn finish(mut self, shared: Shared) {
        self.close();
        self.slot.send_replace(Some(shared));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

/// Waits for the leader's result; `None` when the leader went away without one.
pub(crate) async fn wait(mut rx: watch::Receiver<Option<Shared>>) -> Option<Shared> {
    rx.wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|s| s.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn joiners_get_the_result_and_late_callers_lead_again() {
        let flights = Flights::default();
        let Role::Lead(mut leader) = flights.join_or_lead("k") else {
            panic!("first caller leads")
        };
        let Role::Join(rx) = flights.join_or_lead("k") else {
            panic!("second caller joins")
        };
        leader.close();
        assert!(matches!(flights.join_or_lead("k"), Role::Lead(_)));
        leader.finish(Shared::Reread);
        assert!(matches!(wait(rx).await, Some(Shared::Reread)));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_joiners() {
        let flights = Flights::default();
        let leader = flights.join_or_lead("k");
        let Role::Join(rx) = flights.join_or_lead("k") else {
            panic!("second caller joins")
        };
        drop(leader);
        assert!(wait(rx).await.is_none());
        assert_eq!(flights.len(), 0);
    }
}
