//! Spare key buffers per thread. A call renders its key and its Redis key and drops both within
//! the call; with the buffers handed back here, the next keys the thread renders need no
//! allocation (a `malloc` and a `free` were a tenth of a near hit's instructions).

use std::cell::Cell;

thread_local! {
    /// Two: a call holds its key and its Redis key at once.
    static SPARES: [Cell<String>; 2] = const { [Cell::new(String::new()), Cell::new(String::new())] };
}

/// The room a key starts with: most keys fit.
const START: usize = 48;

/// A larger buffer (one that held a long key) is freed rather than kept.
const MOST_KEPT: usize = 256;

/// An empty buffer with room for a typical key: one of the thread's spares if it has one.
#[inline]
pub(crate) fn take() -> String {
    let mut buffer = SPARES
        .try_with(|spares| match spares[0].take() {
            kept if kept.capacity() > 0 => kept,
            _ => spares[1].take(),
        })
        .unwrap_or_default();
    if buffer.capacity() < START {
        buffer.reserve(START);
    }
    buffer
}

/// Keeps `buffer` as one of the thread's spares, if it is worth keeping.
#[inline]
pub(crate) fn give_back(mut buffer: String) {
    if !(START..=MOST_KEPT).contains(&buffer.capacity()) {
        return;
    }
    buffer.clear();
    // During the thread's teardown there is no spare to keep: the buffer is freed.
    let _ = SPARES.try_with(|spares| {
        let other = spares[0].replace(buffer);
        if other.capacity() > 0 {
            drop(spares[1].replace(other));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_handed_back_is_the_next_one_taken() {
        let mut first = take();
        first.push_str("user:42");
        let at = first.as_ptr();
        give_back(first);
        let second = take();
        assert!(second.is_empty());
        assert_eq!(second.as_ptr(), at, "the same allocation");
    }

    #[test]
    fn two_buffers_are_kept_at_once() {
        let (first, second) = (take(), take());
        let at = [first.as_ptr(), second.as_ptr()];
        give_back(first);
        give_back(second);
        let again = (take(), take());
        let again = [again.0.as_ptr(), again.1.as_ptr()];
        assert!(again.iter().all(|p| at.contains(p)), "the same allocations");
    }

    #[test]
    fn small_and_large_buffers_are_not_kept() {
        let _ = take();
        give_back(String::with_capacity(MOST_KEPT * 2));
        give_back(String::from("x"));
        let taken = take();
        assert!((START..=MOST_KEPT).contains(&taken.capacity()));
    }
}
