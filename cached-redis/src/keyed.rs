//! The map the engine keeps its per-key bookkeeping in (loads in flight, write-backs, wake-up
//! channels, update turns, the in-memory cache's pending loads): keyed by a Redis key, looked
//! up on every miss.
//!
//! foldhash with a per-process random seed rather than the standard library's SipHash: hashing
//! a key twice per miss (lead, close) cost some 630 instructions under callgrind with SipHash,
//! against some 60 with foldhash, which quick_cache (the near store) already brings. Keys come
//! from callers' arguments. foldhash's per-process random seed is, in its own words, minimal
//! protection against hash flooding: it does not hold against an attacker who can observe the
//! process's hashes, as SipHash does. These maps hold only the keys with work in progress (a
//! load, a write-back, a wait), so a flood needs that many concurrent calls, and a collision
//! costs a probe, never a wrong entry.

use std::collections::HashMap;

/// The hash of [`KeyMap`]'s keys.
pub(crate) type KeyHasher = foldhash::fast::RandomState;

/// A map by Redis key.
pub(crate) type KeyMap<V> = HashMap<String, V, KeyHasher>;
