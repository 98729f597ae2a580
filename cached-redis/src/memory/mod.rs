//! The in-memory cache (`Cache::in_memory`): the engine with process memory as the store, for
//! tests and single-instance services. Entries are stored in their encoded form (as in Redis,
//! so any value type works and a hit decodes its own copy), each with its expiry.
//!
//! What a lease does on Redis, a version per key does here: a load or an update registers its
//! key when it begins, every invalidation of a registered key bumps its version, and a store
//! lands only if the version is the one it began under. Stores and removals happen under one
//! lock, so none slips between another's check and its write; hits take no lock.

mod read;
mod write;

use crate::keyed::KeyMap;
use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::local::clock::Clock;
use crate::local::store::{Entry, Store};
use crate::local::versions::Ticket;

/// The entries of an in-memory cache.
pub(crate) struct Memory {
    store: Store,
    /// The scale of the entries' deadlines.
    clock: Clock,
    /// The keys with a load or an update under way, by key.
    pending: Mutex<KeyMap<Pending>>,
}

struct Pending {
    version: u64,
    holders: usize,
}

/// A load or an update of one key under way: its store lands only if no invalidation of the
/// key came since it began. Dropped (finished or cancelled), it stops counting.
pub(crate) struct Begun<'a> {
    memory: &'a Memory,
    key: String,
    version: u64,
}

/// An entry as read.
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
}

impl Memory {
    pub(crate) fn new(entries: usize) -> Memory {
        Memory {
            store: Store::new(entries),
            clock: Clock::new(),
            pending: Mutex::default(),
        }
    }

    fn pending(&self) -> MutexGuard<'_, KeyMap<Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `key`'s entry, if it is live.
    pub(crate) fn get(&self, key: &str) -> Option<Found> {
        let entry = self.store.get(key)?;
        (self.clock.now() < entry.deadline).then_some(Found { entry })
    }

    /// How long `found` stays live.
    pub(crate) fn remaining(&self, found: &Found) -> Duration {
        Duration::from_nanos(found.entry.deadline.saturating_sub(self.clock.now()))
    }

    /// A load or update of `key` begins.
    pub(crate) fn begin(&self, key: &str) -> Begun<'_> {
        let mut pending = self.pending();
        let slot = pending.entry(key.to_owned()).or_insert(Pending {
            version: 0,
            holders: 0,
        });
        slot.holders += 1;
        Begun {
            memory: self,
            key: key.to_owned(),
            version: slot.version,
        }
    }

    /// Stores `bytes` for `ttl` unless an invalidation of the key came since `begun`; whether
    /// it was stored.
    pub(crate) fn store(&self, begun: Begun<'_>, bytes: Vec<u8>, ttl: Duration) -> bool {
        let Some(_locked) = self.still(&begun) else {
            return false;
        };
        let ttl_ns = crate::local::clock::nanos(ttl);
        self.insert(&begun.key, bytes, self.clock.now().saturating_add(ttl_ns));
        true
    }

    /// Replaces `found` (read after `begun`) with `bytes`, same expiry, unless an
    /// invalidation or another write came since; whether it was written. An update is a write:
    /// loads of the key under way will not store.
    pub(crate) fn replace(&self, begun: Begun<'_>, found: &Found, bytes: Vec<u8>) -> bool {
        let Some(mut pending) = self.still(&begun) else {
            return false;
        };
        let current = self.store.get(&begun.key);
        if !current.is_some_and(|current| Arc::ptr_eq(&current.value, &found.entry.value)) {
            return false;
        }
        bump(&mut pending, &begun.key);
        self.insert(&begun.key, bytes, found.entry.deadline);
        true
    }

    /// The lock, if no invalidation of `begun`'s key came since it began.
    fn still(&self, begun: &Begun<'_>) -> Option<MutexGuard<'_, KeyMap<Pending>>> {
        let pending = self.pending();
        let version = pending.get(&begun.key).map(|p| p.version);
        (version == Some(begun.version)).then_some(pending)
    }

    fn insert(&self, key: &str, bytes: Vec<u8>, deadline: u64) {
        let entry = Entry {
            value: Arc::new(bytes) as Arc<dyn Any + Send + Sync>,
            kept: 0,
            deadline,
            ticket: Ticket::UNVERSIONED,
        };
        self.store.insert(key, entry);
    }

    /// Removes `key`'s entry and refuses the stores of loads and updates under way; whether a
    /// live entry was there.
    pub(crate) fn invalidate(&self, key: &str) -> bool {
        let mut pending = self.pending();
        bump(&mut pending, key);
        let was = self.get(key).is_some();
        self.store.remove(key);
        was
    }

    /// Removes the entries whose key `matches` accepts, and refuses the stores of loads and
    /// updates of such keys under way. Returns how many entries went.
    pub(crate) fn invalidate_matching(&self, matches: impl Fn(&str) -> bool) -> u64 {
        let mut pending = self.pending();
        for (_, slot) in pending.iter_mut().filter(|(key, _)| matches(key)) {
            slot.version += 1;
        }
        self.store.remove_keys(matches)
    }

    /// Removes every entry and refuses every store under way; returns how many entries went.
    pub(crate) fn clear(&self) -> u64 {
        let mut pending = self.pending();
        for slot in pending.values_mut() {
            slot.version += 1;
        }
        let removed = self.store.len() as u64;
        self.store.clear();
        removed
    }
}

/// An invalidation of `key`: a load or update of it under way will not store.
fn bump(pending: &mut KeyMap<Pending>, key: &str) {
    if let Some(slot) = pending.get_mut(key) {
        slot.version += 1;
    }
}

impl Drop for Begun<'_> {
    fn drop(&mut self) {
        let mut pending = self.memory.pending();
        if let Some(slot) = pending.get_mut(&self.key) {
            slot.holders -= 1;
            if slot.holders == 0 {
                pending.remove(&self.key);
            }
        }
    }
}
