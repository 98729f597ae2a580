//! Each function's score, which decides whether its calls start with the lease script
//! ([`first_read`](super::first_read) says why and how it is kept).

use std::sync::atomic::{AtomicU16, Ordering::Relaxed};

use crate::Policy;

/// How many scores a cache keeps.
const SLOTS: usize = 256;
/// The highest score.
const CEILING: u8 = 64;
/// From which score calls start with the lease script.
const LEADS_FROM: u8 = 32;
/// How much a hit lowers a score.
const HIT_LOWERS: u8 = 9;

/// Per slot: the mark of the function it belongs to (high byte; zero: none) and its score.
pub(crate) struct FirstReads {
    scores: [AtomicU16; SLOTS],
}

impl FirstReads {
    pub(crate) fn new() -> FirstReads {
        FirstReads {
            scores: std::array::from_fn(|_| AtomicU16::new(0)),
        }
    }

    /// The score of `policy`'s function, if its calls take part: the slot and mark picked by
    /// where its name lives (a literal, for the attribute and for `Policy::new("..")`), hashed
    /// so that neighbouring names spread.
    #[inline]
    pub(crate) fn of(&self, policy: &Policy) -> Option<Score<'_>> {
        if !policy.reads_value_only() {
            return None;
        }
        let hash = (policy.name().as_ptr() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let slot = (hash >> 56) as usize % SLOTS;
        let mark = ((hash >> 48) as u8).max(1);
        Some(Score {
            cell: &self.scores[slot],
            mark,
        })
    }

    /// A call of `policy` found a value.
    pub(crate) fn hit(&self, policy: &Policy) {
        if let Some(score) = self.of(policy) {
            score.hit();
        }
    }

    /// A call of `policy` found no value.
    pub(crate) fn miss(&self, policy: &Policy) {
        if let Some(score) = self.of(policy) {
            score.miss();
        }
    }

    /// Redis did not take a call's lease script: `policy`'s calls start with a `GET` again
    /// (the slot is left alone if another function's calls took it meanwhile).
    pub(crate) fn reset(&self, policy: &Policy) {
        if let Some(score) = self.of(policy).filter(|score| score.get().is_some()) {
            score.set(0);
        }
    }
}

/// One function's score: its slot, and its mark there.
#[derive(Clone, Copy)]
pub(crate) struct Score<'a> {
    cell: &'a AtomicU16,
    mark: u8,
}

impl Score<'_> {
    /// This function's score, `None` while the slot belongs to another.
    #[inline]
    fn get(self) -> Option<u8> {
        let [mark, score] = self.cell.load(Relaxed).to_be_bytes();
        (mark == self.mark || mark == 0).then_some(score)
    }

    /// Sets this function's score; at zero the slot belongs to no function.
    fn set(self, score: u8) {
        let mark = if score == 0 { 0 } else { self.mark };
        self.cell.store(u16::from_be_bytes([mark, score]), Relaxed);
    }

    /// Whether a call starts with the lease script rather than a `GET`.
    #[inline]
    pub(crate) fn lease_first(self) -> bool {
        self.get().is_some_and(|score| score >= LEADS_FROM)
    }

    /// A call found a value: a score at zero is not written.
    #[inline]
    pub(crate) fn hit(self) {
        if let Some(score @ 1..) = self.get() {
            self.set(score.saturating_sub(HIT_LOWERS));
        }
    }

    fn miss(self) {
        if let Some(score) = self.get().filter(|&score| score < CEILING) {
            self.set(score + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> Policy {
        Policy::new("first-read", Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn starts_with_the_lease_script_only_while_nearly_every_call_misses() {
        let (reads, policy) = (FirstReads::new(), policy());
        let lease_first = |reads: &FirstReads| reads.of(&policy).unwrap().lease_first();
        assert!(!lease_first(&reads), "a new function reads first");
        for _ in 0..LEADS_FROM {
            reads.miss(&policy);
        }
        assert!(lease_first(&reads));
        // Nine misses in ten keep it; eight in ten do not.
        for _ in 0..50 {
            (0..9).for_each(|_| reads.miss(&policy));
            reads.hit(&policy);
        }
        assert!(lease_first(&reads));
        for _ in 0..50 {
            (0..8).for_each(|_| reads.miss(&policy));
            (0..2).for_each(|_| reads.hit(&policy));
        }
        assert!(!lease_first(&reads));
    }

    #[test]
    fn a_function_whose_slot_another_holds_starts_with_a_get_and_changes_nothing() {
        let reads = FirstReads::new();
        let (cold, hot) = (policy(), policy());
        let (cold, hot) = (reads.of(&cold).unwrap(), reads.of(&hot).unwrap());
        // Two functions on one slot, told apart by their marks.
        let other = Score {
            cell: hot.cell,
            mark: hot.mark.wrapping_add(1).max(1),
        };
        (0..LEADS_FROM).for_each(|_| cold.miss());
        assert!(cold.lease_first());
        assert!(!other.lease_first(), "the slot is not its");
        other.miss();
        other.hit();
        assert!(cold.lease_first(), "its calls changed nothing");
        // Once the first function's calls hit, the slot is free for the other.
        (0..4).for_each(|_| cold.hit());
        (0..LEADS_FROM).for_each(|_| other.miss());
        assert!(other.lease_first());
        assert!(!cold.lease_first());
    }

    #[test]
    fn policies_whose_hits_read_more_than_the_value_never_take_part() {
        let reads = FirstReads::new();
        let stale = policy().with_stale(Duration::from_secs(5)).unwrap();
        let near = policy().with_near(Duration::from_secs(5)).unwrap();
        for policy in [stale, near] {
            (0..100).for_each(|_| reads.miss(&policy));
            assert!(reads.of(&policy).is_none());
        }
    }
}
