//! Small, fast, non-cryptographic randomness for TTL jitter and lease tokens.
//!
//! Seeded per thread from the standard library's random hash keys; no dependency needed.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish() | 1
}

/// The next 64 random bits (xorshift64*).
pub(crate) fn next_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A number uniform in `0..bound` (`bound > 0`).
pub(crate) fn below(bound: u64) -> u64 {
    ((u128::from(next_u64()) * u128::from(bound)) >> 64) as u64
}

/// A token unique across processes and calls: process id, a per-process counter and 64 random
/// bits.
pub(crate) fn token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}-{:x}-{:016x}", std::process::id(), n, next_u64())
}

#[cfg(test)]
mod tests {
    #[test]
    fn below_stays_in_range_and_tokens_differ() {
        assert!((0..10_000).all(|_| super::below(7) < 7));
        assert_ne!(super::token(), super::token());
    }
}
