//! The write-backs a leader leaves running once its caller has the loaded value: the caller
//! pays for the GET and the lease, not for the store. A later call for the same key in this
//! process waits for its write-back before reading, so it reads what was stored, and
//! [`Cache::settle`](crate::Cache::settle) waits for all of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The write-backs this process has running, by value key.
#[derive(Debug, Default)]
pub(crate) struct WriteBacks {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// How many are running: the read path's check, one atomic load when none is.
    running: AtomicUsize,
    /// For each key, how many of its write-backs run, and a channel closed when the last ends.
    keys: Mutex<HashMap<String, (usize, watch::Sender<()>)>>,
}

/// One running write-back; dropped when it is done (or its task is dropped).
#[derive(Debug)]
pub(crate) struct Running {
    state: Arc<State>,
    key: String,
}

impl WriteBacks {
    /// Counts a write-back of `key` until the returned guard is dropped.
    pub(crate) fn start(&self, key: &str) -> Running {
        let mut keys = self.state.lock();
        keys.entry(key.to_owned())
            .or_insert_with(|| (0, watch::Sender::new(())))
            .0 += 1;
        self.state.running.fetch_add(1, Ordering::SeqCst);
        Running {
            state: self.state.clone(),
            key: key.to_owned(),
        }
    }

    /// How many are running.
    pub(crate) fn len(&self) -> usize {
        self.state.running.load(Ordering::SeqCst)
    }

    /// Whether any is running: one atomic load.
    pub(crate) fn any(&self) -> bool {
        self.len() != 0
    }

    /// Waits until no write-back of `key` started before this call runs.
    pub(crate) async fn done_with(&self, key: &str) {
        let done = self.state.lock().get(key).map(|(_, tx)| tx.subscribe());
        if let Some(mut done) = done {
            // Nothing is sent: `changed` returns when the last write-back of the key ends.
            let _ = done.changed().await;
        }
    }

    /// Waits until none is running.
    pub(crate) async fn settled(&self) {
        loop {
            let running: Vec<_> = self
                .state
                .lock()
                .values()
                .map(|(_, tx)| tx.subscribe())
                .collect();
            if running.is_empty() {
                return;
            }
            for mut done in running {
                let _ = done.changed().await;
            }
        }
    }
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (usize, watch::Sender<()>)>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut keys = self.state.lock();
        if let Some((count, _)) = keys.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                // Dropping the channel's sender wakes those waiting for the key.
                keys.remove(&self.key);
            }
        }
        self.state.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_done_when_its_last_write_back_ends() {
        let write_backs = WriteBacks::default();
        let (first, second) = (write_backs.start("k"), write_backs.start("k"));
        let other = write_backs.start("other");
        assert_eq!(write_backs.len(), 3);
        let waiting = write_backs.done_with("k");
        tokio::pin!(waiting);
        drop(first);
        assert!(futures_poll_once(&mut waiting).await.is_none());
        drop(second);
        waiting.await;
        assert_eq!(write_backs.len(), 1);
        let settled = write_backs.settled();
        tokio::pin!(settled);
        assert!(futures_poll_once(&mut settled).await.is_none());
        drop(other);
        settled.await;
        write_backs.done_with("k").await;
    }

    /// Polls a future once: `Some` if it finished.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut *f).poll(cx) {
                std::task::Poll::Ready(out) => Some(out),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
