//! The in-memory cache (`Cache::in_memory`): the engine with process memory as the store, for
//! tests and single-instance services. Entries are stored in their encoded form (as in Redis,
//! so any value type works and a hit decodes its own copy), each with its expiry and the
//! version it was written under; a write that an invalidation overtook is never served.

mod read;
mod write;

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::local::store::{Entry, Store};
use crate::local::versions::{Ticket, Versions};

/// The entries of an in-memory cache.
pub(crate) struct Memory {
    store: Store,
    versions: Versions,
}

/// An entry as read: its stored bytes, when it expires, and the version it was read at.
pub(crate) struct Found {
    entry: Entry,
}

impl Found {
    pub(crate) fn bytes(&self) -> &[u8] {
        self.entry
            .value
            .downcast_ref::<Vec<u8>>()
            .map_or(&[], Vec::as_slice)
    }

    pub(crate) fn expires(&self) -> Instant {
        self.entry.deadline
    }
}

impl Memory {
    pub(crate) fn new(entries: usize) -> Memory {
        Memory {
            store: Store::new(entries),
            versions: Versions::new(),
        }
    }

    /// `key`'s entry, if it is live.
    pub(crate) fn get(&self, key: &str) -> Option<Found> {
        let entry = self.store.get(key)?;
        let live = Instant::now() < entry.deadline
            && entry.ticket.epoch == self.versions.epoch()
            && self.versions.stripe_still(entry.ticket);
        live.then_some(Found { entry })
    }

    /// What a load of `key` captures before it starts: its value is stored only if no
    /// invalidation of the key came since.
    pub(crate) fn ticket(&self, key: &str) -> Ticket {
        self.versions.ticket(self.store.hash(key))
    }

    /// Stores `bytes` for `ttl`, loaded under `ticket`; `false` if an invalidation came
    /// since (nothing is stored).
    pub(crate) fn store(&self, key: &str, ticket: Ticket, bytes: Vec<u8>, ttl: Duration) -> bool {
        if !self.versions.still(ticket) {
            return false;
        }
        let now = Instant::now();
        self.insert(key, ticket, bytes, now + ttl);
        // An invalidation between the check and the insert: the entry carries the ticket and
        // is never served; it goes now.
        self.versions.still(ticket)
    }

    /// Replaces `found`, read under `ticket` taken before it, with `bytes` (same expiry);
    /// `false` if an invalidation came since (nothing is written).
    pub(crate) fn replace(&self, key: &str, ticket: Ticket, found: &Found, bytes: Vec<u8>) -> bool {
        match self.versions.invalidate_after(ticket) {
            Some(newer) => {
                self.insert(key, newer, bytes, found.expires());
                true
            }
            None => {
                self.store.remove(key);
                false
            }
        }
    }

    fn insert(&self, key: &str, ticket: Ticket, bytes: Vec<u8>, deadline: Instant) {
        let entry = Entry {
            value: Arc::new(bytes) as Arc<dyn Any + Send + Sync>,
            kept: Instant::now(),
            deadline,
            ticket,
        };
        self.store.insert(key, entry);
    }

    /// Removes `key`'s entry and refuses the stores of loads in flight; whether a live entry
    /// was there.
    pub(crate) fn invalidate(&self, key: &str) -> bool {
        let was = self.get(key).is_some();
        self.versions.invalidate(self.store.hash(key));
        self.store.remove(key);
        was
    }

    /// Removes the entries whose key `matches` accepts, and refuses the stores of the loads
    /// in flight (`in_flight`, their keys) of matching keys. Returns how many entries went.
    pub(crate) fn invalidate_matching(
        &self,
        matches: impl Fn(&str) -> bool,
        in_flight: &[String],
    ) -> u64 {
        for key in in_flight.iter().filter(|key| matches(key)) {
            self.versions.invalidate(self.store.hash(key));
        }
        self.store.remove_keys(|key| {
            let hit = matches(key);
            if hit {
                self.versions.invalidate(self.store.hash(key));
            }
            hit
        })
    }

    /// Removes every entry and refuses every load in flight; returns how many entries went.
    pub(crate) fn clear(&self) -> u64 {
        self.versions.flush();
        let removed = self.store.len() as u64;
        self.store.clear();
        removed
    }
}
