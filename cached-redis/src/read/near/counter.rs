//! A counter that many threads bump without sharing a cache line: one slot per thread (by a
//! thread's turn in a round robin), summed when read.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const SLOTS: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct Slot(AtomicU64);

#[derive(Default)]
pub(crate) struct Striped([Slot; SLOTS]);

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SLOT.with(|slot| {
        let mut index = slot.get();
        if index == usize::MAX {
            index = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
            slot.set(index);
        }
        index
    })
}

impl Striped {
    pub(crate) fn bump(&self) {
        self.0[slot()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }

    pub(crate) fn reset(&self) {
        for slot in &self.0 {
            slot.0.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn threads_count_into_one_sum() {
        let counter = super::Striped::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..1000).for_each(|_| counter.bump()));
            }
        });
        assert_eq!(counter.sum(), 4000);
        counter.reset();
        assert_eq!(counter.sum(), 0);
    }
}
