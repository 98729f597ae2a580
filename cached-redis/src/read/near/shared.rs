//! What the hit path and the tracking connection share: the copies, their versions, the
//! allowed lag and the counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::counter::Striped;
use crate::local::store::Store;
use crate::local::versions::Versions;

/// What the hit path and the tracking connection share.
pub(super) struct Shared {
    pub(super) store: Store,
    pub(super) versions: Versions,
    /// The longest a copy is served after Redis sent its invalidation, whatever happens to
    /// the tracking connection.
    pub(super) lag: Duration,
    /// `lag` in nanoseconds, as the hit path compares it.
    pub(super) lag_ns: u64,
    /// What every value key of the cache starts with, `<namespace>:{`: copies are kept by the
    /// rendered key inside the braces, which a call has without building the Redis key.
    value_prefix: String,
    pub(super) hits: Striped,
    pub(super) flushes: AtomicU64,
    pub(super) rejected: AtomicU64,
}

impl Shared {
    pub(super) fn new(entries: usize, lag: Duration, namespace: &str) -> Shared {
        Shared {
            value_prefix: format!("{namespace}:{{"),
            store: Store::new(entries),
            versions: Versions::new(),
            lag,
            lag_ns: crate::local::clock::nanos(lag),
            hits: Striped::default(),
            flushes: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Drops the copy of the entry whose Redis key is `redis_key`. A lease's key holds no
    /// value, and its writes (every load takes one) are not let reject or drop copies; a key
    /// that is no value key of this cache has no copy.
    pub(super) fn forget_redis_key(&self, redis_key: &str) {
        if crate::lease::is_lease_key(redis_key) {
            return;
        }
        let rendered = redis_key
            .strip_prefix(self.value_prefix.as_str())
            .and_then(|inside| inside.strip_suffix('}'));
        if let Some(rendered) = rendered {
            self.forget(rendered);
        }
    }

    /// Drops the copy of the entry rendered `key`; reads of it in flight keep nothing.
    pub(super) fn forget(&self, key: &str) {
        self.versions.invalidate(self.store.hash(key));
        self.store.remove(key);
    }

    /// Drops every copy (a bulk invalidation, `FLUSHALL`).
    pub(super) fn flush(&self) {
        self.versions.flush();
        self.store.clear();
        self.flushes.fetch_add(1, Ordering::Relaxed);
    }

    /// The tracking connection is lost: every copy goes, and none is served until it is back.
    pub(super) fn lose(&self) {
        self.versions.lose();
        self.store.clear();
        self.flushes.fetch_add(1, Ordering::Relaxed);
    }
}
