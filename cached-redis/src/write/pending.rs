//! Invalidations that could not reach Redis, kept until they are replayed
//! ([`replay`](super::replay)). While one is pending, this process reads none of the keys it
//! covers from Redis: it loads them, storing nothing, so a write it made during an outage stays
//! visible to it. Bounded: past [`MOST`] the kept removals become one of the whole namespace.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::keyed::KeyMap;
use crate::{Key, KeyFamily};

/// The most keys and patterns kept; one more and they fold into a removal of everything.
pub(crate) const MOST: usize = 10_000;

/// A removal of many entries that could not reach Redis.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Removal {
    Family(KeyFamily),
    Prefix(String),
    All,
}

/// What is pending, each with the sequence number it was recorded at: a replay that succeeds
/// removes it only if no later failure of the same invalidation replaced it meanwhile.
#[derive(Debug, Default)]
struct State {
    keys: KeyMap<(Key, u64)>,
    removals: Vec<(Removal, u64)>,
    seq: u64,
}

/// What a replay sends: the keys (value key, rendered key) and the removals, with their
/// sequence numbers.
pub(crate) struct Snapshot {
    pub(crate) keys: Vec<(String, Key, u64)>,
    pub(crate) removals: Vec<(Removal, u64)>,
}

#[derive(Debug)]
pub(crate) struct Pending {
    /// What every value key of the cache starts with, `<namespace>:{`.
    value_prefix: String,
    /// The namespace, for metrics.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    namespace: String,
    state: Mutex<State>,
    /// How many keys and removals are pending: reads skip the lock while it is 0.
    count: AtomicUsize,
    pub(crate) replayed: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

impl Pending {
    pub(crate) fn new(namespace: &str) -> Pending {
        Pending {
            value_prefix: format!("{namespace}:{{"),
            namespace: namespace.to_owned(),
            state: Mutex::default(),
            count: AtomicUsize::new(0),
            replayed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many invalidations are pending.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Now, on the pending invalidations' sequence: taken before an invalidation is sent, it
    /// names the failures that invalidation covers if it succeeds.
    pub(crate) fn now(&self) -> u64 {
        self.lock().seq
    }

    /// Keeps the invalidation of `key` (whose Redis key is `value_key`).
    pub(crate) fn add_key(&self, value_key: &str, key: &Key) {
        let mut state = self.lock();
        state.seq += 1;
        let seq = state.seq;
        state.keys.insert(value_key.to_owned(), (key.clone(), seq));
        self.bound(&mut state);
    }

    /// Keeps a removal of many entries (once: the same removal failing again renews it).
    pub(crate) fn add_removal(&self, removal: Removal) {
        let mut state = self.lock();
        state.seq += 1;
        let seq = state.seq;
        state.removals.retain(|(kept, _)| *kept != removal);
        state.removals.push((removal, seq));
        self.bound(&mut state);
    }

    /// Past [`MOST`], everything kept folds into one removal of the whole namespace.
    fn bound(&self, state: &mut State) {
        let kept = state.keys.len() + state.removals.len();
        if kept > MOST {
            self.note_dropped(kept as u64 - 1);
            let seq = state.seq;
            state.keys.clear();
            state.removals = vec![(Removal::All, seq)];
        }
        self.counted(state);
    }

    /// Publishes how many are pending (`cached_redis_invalidations_pending` with `metrics`).
    fn counted(&self, state: &State) {
        let pending = state.keys.len() + state.removals.len();
        self.count.store(pending, Ordering::SeqCst);
        #[cfg(feature = "metrics")]
        metrics::gauge!("cached_redis_invalidations_pending", "namespace" => self.namespace.clone())
            .set(pending as f64);
    }

    /// Counts one replayed (`cached_redis_invalidations_replayed_total` with `metrics`).
    pub(crate) fn note_replayed(&self) {
        self.replayed.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("cached_redis_invalidations_replayed_total", "namespace" => self.namespace.clone())
            .increment(1);
    }

    /// Counts `dropped` folded into a removal of everything
    /// (`cached_redis_invalidations_dropped_total` with `metrics`).
    fn note_dropped(&self, dropped: u64) {
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("cached_redis_invalidations_dropped_total", "namespace" => self.namespace.clone())
            .increment(dropped);
    }

    /// Whether a pending invalidation covers the entry whose Redis key is `value_key`. One
    /// atomic load while none is pending (inlined into every call's path).
    #[inline]
    pub(crate) fn covers(&self, value_key: &str) -> bool {
        self.len() != 0 && self.covers_pending(value_key)
    }

    /// [`Pending::covers`] once something is pending.
    fn covers_pending(&self, value_key: &str) -> bool {
        let rendered = value_key
            .strip_prefix(self.value_prefix.as_str())
            .and_then(|inside| inside.strip_suffix('}'))
            .unwrap_or(value_key);
        let state = self.lock();
        state.keys.contains_key(value_key)
            || state.removals.iter().any(|(removal, _)| match removal {
                Removal::All => true,
                Removal::Family(family) => family.matches_rendered(rendered),
                Removal::Prefix(prefix) => starts_with_prefix(rendered, prefix),
            })
    }

    /// An invalidation of `value_key` sent at `sent` (see [`Pending::now`]) succeeded: the
    /// failures before it are covered.
    pub(crate) fn key_done(&self, value_key: &str, sent: u64) {
        if self.len() == 0 {
            return;
        }
        let mut state = self.lock();
        if state
            .keys
            .get(value_key)
            .is_some_and(|(_, seq)| *seq <= sent)
        {
            state.keys.remove(value_key);
            self.counted(&state);
        }
    }

    /// The removal recorded at `seq` was replayed.
    pub(crate) fn removal_done(&self, seq: u64) {
        let mut state = self.lock();
        state.removals.retain(|(_, s)| *s != seq);
        self.counted(&state);
    }

    /// What is pending now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        Snapshot {
            keys: state
                .keys
                .iter()
                .map(|(value_key, (key, seq))| (value_key.clone(), key.clone(), *seq))
                .collect(),
            removals: state.removals.clone(),
        }
    }
}

/// Whether a rendered key starts with `prefix`, as [`Cache::invalidate_prefix`]'s patterns
/// match: a shortened key by its readable part too.
///
/// [`Cache::invalidate_prefix`]: crate::Cache::invalidate_prefix
fn starts_with_prefix(rendered: &str, prefix: &str) -> bool {
    rendered.starts_with(prefix)
        || crate::key::readable_part_of_long_prefix(prefix)
            .is_some_and(|readable| rendered.starts_with(&format!("{readable}\\#")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_covered_until_an_invalidation_sent_after_its_failure_succeeds() {
        let pending = Pending::new("ns");
        let key = Key::raw("user:1");
        assert!(!pending.covers("ns:{user:1}"));
        let before = pending.now();
        pending.add_key("ns:{user:1}", &key);
        assert!(pending.covers("ns:{user:1}"));
        assert!(!pending.covers("ns:{user:2}"));
        pending.key_done("ns:{user:1}", before);
        assert!(pending.covers("ns:{user:1}"), "sent before the failure");
        pending.key_done("ns:{user:1}", pending.now());
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn removals_cover_by_prefix_and_past_the_bound_fold_into_everything() {
        let pending = Pending::new("ns");
        pending.add_removal(Removal::Prefix("user:".into()));
        assert!(pending.covers("ns:{user:1}"));
        assert!(!pending.covers("ns:{order:1}"));
        for i in 0..MOST {
            pending.add_key(&format!("ns:{{k:{i}}}"), &Key::raw(format!("k:{i}")));
        }
        assert_eq!(pending.len(), 1, "folded into one removal");
        assert!(pending.covers("ns:{order:1}"));
        assert_eq!(pending.dropped.load(Ordering::Relaxed), MOST as u64);
        let Snapshot { removals, .. } = pending.snapshot();
        pending.removal_done(removals[0].1);
        assert_eq!(pending.len(), 0);
    }
}
