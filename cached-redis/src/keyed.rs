//! The map the engine keeps its per-key bookkeeping in (loads in flight, write-backs, wake-up
//! channels, update turns, the in-memory cache's pending loads): keyed by a Redis key, looked
//! up on every miss.
//!
//! foldhash with a per-process random seed rather than the standard library's SipHash: hashing
//! a key twice per miss (lead, close) cost some 630 instructions under callgrind with SipHash,
//! against some 60 with foldhash, which quick_cache (the near store) already brings. Keys come
//! from callers' arguments; foldhash's random seed keeps an outsider from choosing keys that
//! collide without seeing the process's hashes, and a collision costs a probe, never a wrong
//! entry.

use std::collections::HashMap;

/// The hash of [`KeyMap`]'s keys.
pub(crate) type KeyHasher = foldhash::fast::RandomState;

/// A map by Redis key.
pub(crate) type KeyMap<V> = HashMap<String, V, KeyHasher>;
