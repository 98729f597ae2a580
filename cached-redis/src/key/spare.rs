//! A spare key buffer per thread. A near hit renders its key and drops it within the call; with
//! the buffer handed back here, the next key the thread renders needs no allocation (a `malloc`
//! and a `free` were a tenth of a near hit's instructions).

use std::cell::Cell;

thread_local! {
    static SPARE: Cell<String> = const { Cell::new(String::new()) };
}

/// The room a key starts with: most keys fit.
const START: usize = 48;

/// A larger buffer (one that held a long key) is freed rather than kept.
const MOST_KEPT: usize = 256;

/// An empty buffer with room for a typical key: the thread's spare if it has one.
#[inline]
pub(super) fn take() -> String {
    let mut buffer = SPARE.try_with(Cell::take).unwrap_or_default();
    if buffer.capacity() < START {
        buffer.reserve(START);
    }
    buffer
}

/// Keeps `buffer` as the thread's spare, if it is worth keeping.
#[inline]
pub(super) fn give_back(mut buffer: String) {
    if !(START..=MOST_KEPT).contains(&buffer.capacity()) {
        return;
    }
    buffer.clear();
    // During the thread's teardown there is no spare to keep: the buffer is freed.
    let _ = SPARE.try_with(|spare| drop(spare.replace(buffer)));
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
    fn small_and_large_buffers_are_not_kept() {
        let _ = take();
        give_back(String::with_capacity(MOST_KEPT * 2));
        give_back(String::from("x"));
        let taken = take();
        assert!((START..=MOST_KEPT).contains(&taken.capacity()));
    }
}
