//! Updates of one entry take turns in this process, so that only other processes' updates
//! make a compare-and-set fail (`update.rs` runs the rounds).

use crate::keyed::KeyMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

/// Updates of one entry in this process take turns, so they never conflict with each other:
/// only other processes' updates make a compare-and-set fail.
#[derive(Default)]
pub(crate) struct UpdateQueue {
    turns: Mutex<KeyMap<Arc<tokio::sync::Mutex<()>>>>,
}

/// An update's turn on its entry; the queue forgets the entry when no one else waits for it.
pub(crate) struct Turn<'a> {
    queue: &'a UpdateQueue,
    key: String,
    held: Option<OwnedMutexGuard<()>>,
}

impl UpdateQueue {
    /// This update's turn on `key`, waiting at most `bound` for it: past that the update goes
    /// ahead without it (the compare-and-set keeps it correct; the queue only spares rounds),
    /// so a slow Redis cannot make the k-th queued update wait k times its deadline.
    pub(crate) async fn turn(&self, key: &str, bound: Duration) -> Turn<'_> {
        let mutex = {
            let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(turns.entry(key.to_owned()).or_default())
        };
        let mut turn = Turn {
            queue: self,
            key: key.to_owned(),
            held: None,
        };
        // Cancelled while waiting, `turn` is dropped all the same and cleans up.
        turn.held = tokio::time::timeout(bound, mutex.lock_owned()).await.ok();
        turn
    }

    /// Entries with updates running or waiting, in this process.
    pub(crate) fn len(&self) -> usize {
        self.turns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.held.take());
        let mut turns = self.queue.turns.lock().unwrap_or_else(|p| p.into_inner());
        if turns
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            turns.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An update waits for its turn at most its bound, then goes ahead without it.
    #[tokio::test(start_paused = true)]
    async fn a_turn_is_waited_for_at_most_its_bound() {
        let queue = UpdateQueue::default();
        let first = queue.turn("k", Duration::from_secs(1)).await;
        assert!(first.held.is_some());
        let started = tokio::time::Instant::now();
        let second = queue.turn("k", Duration::from_millis(100)).await;
        assert!(second.held.is_none(), "went ahead without the turn");
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        drop((first, second));
        assert_eq!(queue.len(), 0, "the queue forgets the entry");
    }
}
