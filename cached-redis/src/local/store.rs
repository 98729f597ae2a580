//! The near copies: decoded values by Redis key, each with the moment it stops being served
//! and the flush epoch it belongs to, bounded by entry count.
//!
//! quick_cache (S3-FIFO, sharded, a read lock per lookup), measured under callgrind for a hit
//! of a 24-byte key (lookup, entry clone, epoch and deadline checks, downcast): ~300
//! instructions and no allocation, against ~1,480 for moka's `sync::Cache` with per-entry
//! `Expiry` (its read log, housekeeping and second clock read) and ~420 for a `RwLock`ed
//! `HashMap`. It has no per-entry expiry, so the deadline is checked on read and expired
//! copies leave as capacity evicts them.

use std::any::Any;
use std::hash::BuildHasher;
use std::sync::Arc;

use super::versions::Ticket;

/// One near copy.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) value: Arc<dyn Any + Send + Sync>,
    /// When it was kept, as [`Versions::now`](super::versions::Versions::now) reads it: a
    /// function whose `near` is shorter than the one that kept it counts from here.
    pub(crate) kept: u64,
    /// When its Redis entry expires, or the `near` of the function that kept it ends, on the
    /// same scale.
    pub(crate) deadline: u64,
    /// The read it came from: served only while no invalidation of its stripe, and no flush,
    /// has been applied since (an invalidation applied between the check before the insert
    /// and the insert finds nothing to remove).
    pub(crate) ticket: Ticket,
}

pub(crate) struct Store {
    map: quick_cache::sync::Cache<Box<str>, Entry>,
    hasher: foldhash::fast::FixedState,
}

impl Store {
    pub(crate) fn new(entries: usize) -> Store {
        Store {
            map: quick_cache::sync::Cache::new(entries.max(1)),
            hasher: foldhash::fast::FixedState::with_seed(0x6e65_6172),
        }
    }

    /// The stripe hash of a key (not the map's own).
    pub(crate) fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    pub(crate) fn get(&self, key: &str) -> Option<Entry> {
        self.map.get(key)
    }

    pub(crate) fn insert(&self, key: &str, entry: Entry) {
        self.map.insert(Box::from(key), entry);
    }

    /// Removes the copy of `key` if it is `entry` (by identity): a newer copy inserted by a
    /// later read stays.
    pub(crate) fn remove_own(&self, key: &str, entry: &Entry) {
        self.map
            .remove_if(key, |current| Arc::ptr_eq(&current.value, &entry.value));
    }

    pub(crate) fn remove(&self, key: &str) {
        self.map.remove(key);
    }

    /// Removes the copies whose key `remove` accepts; returns how many.
    pub(crate) fn remove_keys(&self, remove: impl Fn(&str) -> bool) -> u64 {
        let removed = std::cell::Cell::new(0);
        self.map.retain(|key, _| {
            let gone = remove(key);
            removed.set(removed.get() + u64::from(gone));
            !gone
        });
        removed.get()
    }

    pub(crate) fn clear(&self) {
        self.map.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}
