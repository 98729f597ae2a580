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

/// This process's id, asked of the system once (`getpid` is a syscall, on a miss's path), and
/// again in a child after `fork`: a forked process draws the same counter and random bits as
/// its parent, so its tokens differ only by this.
#[cfg(target_os = "linux")]
fn process_id() -> u32 {
    use std::sync::atomic::AtomicU32;
    static ID: AtomicU32 = AtomicU32::new(0);
    static WATCHED: std::sync::Once = std::sync::Once::new();
    extern "C" fn forked() {
        ID.store(0, Ordering::Relaxed);
    }
    // SAFETY: `forked` only stores to an atomic, which is async-signal-safe, as a handler run
    // in a child between `fork` and its return must be.
    WATCHED.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(forked));
    });
    match ID.load(Ordering::Relaxed) {
        0 => {
            let id = std::process::id();
            ID.store(id, Ordering::Relaxed);
            id
        }
        id => id,
    }
}

/// This process's id.
#[cfg(not(target_os = "linux"))]
fn process_id() -> u32 {
    std::process::id()
}

/// A token unique across processes and calls: process id, a per-process counter and 64 random
/// bits.
pub(crate) fn token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut token = String::with_capacity(8 + 1 + 16 + 1 + 16);
    push_hex(&mut token, process_id().into(), 1);
    token.push('-');
    push_hex(&mut token, n, 1);
    token.push('-');
    push_hex(&mut token, next_u64(), 16);
    token
}

/// Appends `n` in lowercase hex, at least `width` digits (`format!`'s machinery costs a miss
/// ~1,000 instructions more, and `char::from_digit` ~250).
fn push_hex(out: &mut String, n: u64, width: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(width);
    for shift in (0..digits).rev() {
        out.push(char::from(HEX[((n >> (shift * 4)) & 0xf) as usize]));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn below_stays_in_range_and_tokens_differ() {
        assert!((0..10_000).all(|_| super::below(7) < 7));
        assert_ne!(super::token(), super::token());
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        for (n, width, hex) in [
            (0, 1, "0"),
            (0xab, 1, "ab"),
            (0xab, 4, "00ab"),
            (u64::MAX, 16, "ffffffffffffffff"),
        ] {
            let mut out = String::new();
            super::push_hex(&mut out, n, width);
            assert_eq!(out, hex);
        }
    }

    #[test]
    fn hex_matches_format() {
        for (n, width) in [
            (0, 1),
            (0, 16),
            (0xabc, 1),
            (0xabc, 16),
            (u64::MAX, 16),
            (1 << 60, 1),
        ] {
            let mut out = String::new();
            super::push_hex(&mut out, n, width);
            assert_eq!(out, format!("{n:0w$x}", w = width as usize));
        }
    }
}
