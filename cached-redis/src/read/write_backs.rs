//! The write-backs a leader leaves running once its caller has the loaded value: the caller
//! pays for the GET and the lease, not for the store. A later call for the same key in this
//! process waits for its write-back before reading, so it reads what was stored (or, if Redis
//! did not answer it, skips the write path), and [`Cache::settle`](crate::Cache::settle)
//! waits for all of them, and for the refreshes running in the background.

use crate::keyed::KeyMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;

/// The write-backs this process has running, by value key.
#[derive(Debug)]
pub(crate) struct WriteBacks {
    state: Arc<State>,
    /// The runtime the cache was built on, where its write-backs run: a caller's own runtime
    /// may be a current-thread one that nothing polls once the caller has its value.
    runtime: Option<Handle>,
}

/// Per key: how many of its write-backs run, and a channel that says whether one went
/// unanswered, closed when the last ends.
/// [`WriteBacks::answered`]: ready at once when nothing was running.
pub(crate) struct Answered(Option<Done>);

impl std::future::Future for Answered {
    type Output = bool;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<bool> {
        match &mut self.0 {
            None => std::task::Poll::Ready(true),
            Some(done) => done.as_mut().poll(cx),
        }
    }
}

/// A wait for write-backs ([`WriteBacks::running`]).
pub(crate) type Done = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

type Keys = KeyMap<(usize, watch::Sender<bool>)>;

#[derive(Debug, Default)]
struct State {
    /// How many are running: the read path's check, one atomic load when none is.
    running: AtomicUsize,
    keys: Mutex<Keys>,
    /// How many refreshes run in the background (loading; their write-backs count above).
    refreshes: watch::Sender<usize>,
}

/// One background refresh, counted until it ends (or its task is dropped).
struct Refreshing(Arc<State>);

impl Drop for Refreshing {
    fn drop(&mut self) {
        self.0.refreshes.send_modify(|n| *n -= 1);
    }
}

/// One running write-back; dropped when it is done (or its task is dropped).
#[derive(Debug)]
pub(crate) struct Running {
    state: Arc<State>,
    key: String,
}

impl WriteBacks {
    /// Write-backs run on the runtime this is made on, if any (else on their caller's).
    pub(crate) fn on_this_runtime() -> WriteBacks {
        WriteBacks {
            state: Arc::default(),
            runtime: Handle::try_current().ok(),
        }
    }

    /// Runs a write-back in a task of its own.
    pub(crate) fn spawn(&self, write_back: impl Future<Output = ()> + Send + 'static) {
        match &self.runtime {
            Some(runtime) => drop(runtime.spawn(write_back)),
            None => drop(tokio::spawn(write_back)),
        }
    }

    /// Runs a refresh (its load, then its write-back), or the HTTP layer's removals after a
    /// write, in a task of its own, counted until it ends: [`WriteBacks::settled`] waits for
    /// it.
    pub(crate) fn spawn_refresh(&self, refresh: impl Future<Output = ()> + Send + 'static) {
        self.state.refreshes.send_modify(|n| *n += 1);
        let counted = Refreshing(self.state.clone());
        self.spawn(async move {
            let _counted = counted;
            refresh.await;
        });
    }

    /// Counts a write-back of `key` until the returned guard is dropped.
    pub(crate) fn start(&self, key: &str) -> Running {
        let mut keys = self.state.lock();
        keys.entry(key.to_owned())
            .or_insert_with(|| (0, watch::Sender::new(false)))
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

    /// The wait for the write-backs of `key` that run now, if any (one atomic load when none
    /// runs): it ends, at most `bound` later, once none started before this call runs, with
    /// `false` if one went unanswered by Redis (or outlasted `bound`). Boxed, and made only
    /// when one runs: a call's future, which every call moves, then holds a pointer rather
    /// than a timer.
    pub(crate) fn running(&self, key: &str, bound: Duration) -> Option<Done> {
        if self.len() == 0 {
            return None;
        }
        let mut done = self.state.lock().get(key).map(|(_, tx)| tx.subscribe())?;
        let ended = async move {
            // `changed` errs once the last write-back of the key has ended.
            while done.changed().await.is_ok() {}
            !*done.borrow()
        };
        Some(Box::pin(async move {
            tokio::time::timeout(bound, ended).await.unwrap_or(false)
        }))
    }

    /// Whether Redis answered the write-backs of `key` that run now: at once (`true`) when none
    /// runs, else once they end, at most `bound` later ([`WriteBacks::running`]). A later call
    /// waits for it so that its read sees what they stored; `false` tells it the write path is
    /// in trouble, and it loads as when Redis cannot be read rather than queue its own lease
    /// script behind them.
    pub(crate) fn answered(&self, key: &str, bound: Duration) -> Answered {
        Answered(self.running(key, bound))
    }

    /// Waits until none is running, nor any background refresh (whose write-back starts
    /// before it ends).
    pub(crate) async fn settled(&self) {
        loop {
            let mut refreshes = self.state.refreshes.subscribe();
            let _ = refreshes.wait_for(|n| *n == 0).await;
            let running: Vec<_> = self
                .state
                .lock()
                .values()
                .map(|(_, tx)| tx.subscribe())
                .collect();
            if running.is_empty() && *self.state.refreshes.borrow() == 0 {
                return;
            }
            for mut done in running {
                let _ = done.changed().await;
            }
        }
    }
}

impl Running {
    /// Tells those waiting for the key that Redis did not answer this write-back.
    pub(crate) fn unanswered(&self) {
        if let Some((_, tx)) = self.state.lock().get(&self.key) {
            tx.send_replace(true);
        }
    }
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
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
        let write_backs = WriteBacks::on_this_runtime();
        let (first, second) = (write_backs.start("k"), write_backs.start("k"));
        let other = write_backs.start("other");
        assert_eq!(write_backs.len(), 3);
        let waiting = write_backs
            .running("k", Duration::from_secs(60))
            .expect("two run");
        tokio::pin!(waiting);
        drop(first);
        assert!(futures_poll_once(&mut waiting).await.is_none());
        second.unanswered();
        drop(second);
        assert!(!waiting.await, "one went unanswered");
        assert_eq!(write_backs.len(), 1);
        let settled = write_backs.settled();
        tokio::pin!(settled);
        assert!(futures_poll_once(&mut settled).await.is_none());
        drop(other);
        settled.await;
        assert!(
            write_backs.running("k", Duration::ZERO).is_none(),
            "none runs"
        );
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
