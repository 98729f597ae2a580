//! URLs whose last response was not stored (personal, uncacheable, too long), remembered for a
//! while in this process: their next requests go straight to the handler instead of queueing
//! on the lease one after another, as every handler run of such a URL would otherwise do.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many URLs are remembered; past it, the memory starts over.
const MOST: usize = 10_000;

/// How long a URL is remembered: a short while, so one that starts answering with something
/// storable is cached again soon. Remembering it longer would only cost hits, never serve
/// anything stale.
const FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(crate) struct Uncacheable {
    until: Mutex<HashMap<String, Instant>>,
}

impl Uncacheable {
    /// Whether `key`'s last response was not stored, recently.
    pub(crate) fn holds(&self, key: &str) -> bool {
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        match until.get(key) {
            Some(&at) if at > Instant::now() => true,
            Some(_) => {
                until.remove(key);
                false
            }
            None => false,
        }
    }

    /// Remembers that `key`'s response was not stored, for at most `ttl`.
    pub(crate) fn remember(&self, key: &str, ttl: Duration) {
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if until.len() >= MOST {
            until.clear();
        }
        until.insert(key.to_owned(), Instant::now() + ttl.min(FOR));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_remembered_for_a_while_and_the_memory_is_bounded() {
        let memo = Uncacheable::default();
        assert!(!memo.holds("a"));
        memo.remember("a", Duration::from_secs(30));
        assert!(memo.holds("a"));
        memo.remember("b", Duration::ZERO);
        assert!(!memo.holds("b"), "expired at once");
        for i in 0..MOST {
            memo.remember(&i.to_string(), Duration::from_secs(30));
        }
        assert!(memo.until.lock().unwrap().len() <= MOST);
    }
}
