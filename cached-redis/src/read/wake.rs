//! Waking waiters through Redis pub/sub instead of polling.
//!
//! A caller that finds another process holding an entry's lease subscribes to the entry's
//! channel *before* checking the value again, so a write-back that lands in between is either
//! seen by that check or announced on the channel. Subscriptions are counted per channel and
//! dropped when the last waiter leaves.
//!
//! Nothing process-wide is held across a network await: each channel orders its own SUBSCRIBE
//! and UNSUBSCRIBE (so an unsubscribe never overtakes a newer subscribe), and a waiter bounds
//! its subscribe by its own deadline, so a slow or black-holed subscriber connection costs each
//! waiter at most that deadline, never a queue of other waiters' timeouts. A SUBSCRIBE that may
//! have been sent is always undone when the last waiter leaves, even if it was cancelled before
//! its reply, so no channel stays subscribed on the server.
//!
//! The subscriber is a dedicated RESP3 connection that reconnects and resubscribes by itself.
//! When it drops, every waiter is woken to check again; a waiter never sleeps past the lease's
//! expiry, so a lost message costs at most one lease TTL.

use crate::keyed::KeyMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::watch;

use crate::conn::Conn;
use crate::conn::guard::Guard;
use crate::stats::Counters;

#[derive(Debug)]
struct Channel {
    waiters: usize,
    /// A SUBSCRIBE may have reached Redis and no UNSUBSCRIBE was sent since.
    on_server: bool,
    /// A SUBSCRIBE was confirmed: messages arrive.
    live: bool,
    wake: watch::Sender<u64>,
    /// Orders this channel's SUBSCRIBE and UNSUBSCRIBE; no other channel waits on it.
    commands: Arc<tokio::sync::Mutex<()>>,
}

type Registry = Arc<Mutex<KeyMap<Channel>>>;

fn lock(registry: &Registry) -> std::sync::MutexGuard<'_, KeyMap<Channel>> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

/// The registry of waited-on channels and the connection that subscribes to them.
pub(crate) struct Wakeups {
    conn: Conn,
    registry: Registry,
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups")
            .field("channels", &lock(&self.registry).len())
            .finish_non_exhaustive()
    }
}

/// The push handler: wakes the waiters of the channel a message came on (plain or sharded); on
/// a disconnect, wakes everyone.
pub(crate) struct Dispatcher {
    registry: Registry,
}

impl redis::aio::AsyncPushSender for Dispatcher {
    fn send(&self, push: PushInfo) -> Result<(), redis::aio::SendError> {
        let map = lock(&self.registry);
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                if let Some(Value::BulkString(name)) = push.data.first()
                    && let Ok(name) = std::str::from_utf8(name)
                    && let Some(channel) = map.get(name)
                {
                    channel.wake.send_modify(|n| *n += 1);
                }
            }
            PushKind::Disconnection => {
                for channel in map.values() {
                    channel.wake.send_modify(|n| *n += 1);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Wakeups {
    /// Creates the subscriber with `connect`, which must not connect yet (nothing connects
    /// until the first wait) and must deliver push messages to the dispatcher it is given.
    pub(crate) fn new(
        connect: impl FnOnce(Dispatcher) -> redis::RedisResult<Conn>,
    ) -> redis::RedisResult<Wakeups> {
        let registry = Registry::default();
        let conn = connect(Dispatcher {
            registry: registry.clone(),
        })?;
        Ok(Wakeups { conn, registry })
    }

    /// Subscribes to `channel` (or joins an existing subscription), taking at most `within`.
    /// The returned subscription sees every message published after this returns; it is not
    /// live when Redis could not be subscribed to in time, and the caller should poll.
    pub(crate) async fn subscribe(
        &self,
        channel: &str,
        within: Duration,
        guard: &Guard,
        stats: &Counters,
    ) -> Subscription {
        let (mut sub, commands) = self.register(channel);
        if sub.live {
            return sub;
        }
        let subscribing = async {
            let _order = commands.lock().await;
            if !self.mark_sent(channel) {
                return true; // another waiter subscribed while this one waited its turn
            }
            let subscribed = guard
                .bounded(stats, "SUBSCRIBE", self.conn.subscribe(channel))
                .await
                .is_ok();
            if subscribed && let Some(entry) = lock(&self.registry).get_mut(channel) {
                entry.live = true;
            }
            subscribed
        };
        sub.live = tokio::time::timeout(within, subscribing)
            .await
            .unwrap_or(false);
        sub.rx.mark_unchanged();
        sub
    }

    /// Counts a waiter on `channel` and returns its handle (live if the channel already is)
    /// and the channel's command order.
    fn register(&self, channel: &str) -> (Subscription, Arc<tokio::sync::Mutex<()>>) {
        let mut map = lock(&self.registry);
        let entry = map.entry(channel.to_owned()).or_insert_with(|| Channel {
            waiters: 0,
            on_server: false,
            live: false,
            wake: watch::Sender::new(0),
            commands: Arc::default(),
        });
        entry.waiters += 1;
        let mut rx = entry.wake.subscribe();
        rx.mark_unchanged();
        let sub = Subscription {
            rx,
            live: entry.live,
            channel: channel.to_owned(),
            registry: self.registry.clone(),
            conn: self.conn.clone(),
        };
        (sub, entry.commands.clone())
    }

    /// Records that a SUBSCRIBE is about to be sent, before it is: if the sender is cancelled
    /// mid-call, the last waiter to leave still unsubscribes. `false` if already live.
    fn mark_sent(&self, channel: &str) -> bool {
        let mut map = lock(&self.registry);
        match map.get_mut(channel) {
            Some(entry) if entry.live => false,
            Some(entry) => {
                entry.on_server = true;
                true
            }
            None => false,
        }
    }

    /// Channels with at least one waiter (for tests of cleanup).
    pub(crate) fn channels(&self) -> usize {
        lock(&self.registry).len()
    }
}

/// One waiter's interest in a channel. Dropping it unsubscribes once nobody else waits.
pub(crate) struct Subscription {
    rx: watch::Receiver<u64>,
    live: bool,
    channel: String,
    registry: Registry,
    conn: Conn,
}

/// The bound on the UNSUBSCRIBE sent when a channel's last waiter leaves.
const UNSUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(1);

impl Subscription {
    /// Whether messages arrive; when not, waiters poll.
    pub(crate) fn is_live(&self) -> bool {
        self.live
    }

    /// Waits for a message on the channel (or a reconnect) for at most `limit`.
    pub(crate) async fn wait(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.rx.changed()).await;
        self.rx.mark_unchanged();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let commands = {
            let mut map = lock(&self.registry);
            let Some(entry) = map.get_mut(&self.channel) else {
                return;
            };
            entry.waiters -= 1;
            if entry.waiters > 0 {
                return;
            }
            entry.commands.clone()
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            lock(&self.registry).remove(&self.channel);
            return;
        };
        let registry = self.registry.clone();
        let channel = std::mem::take(&mut self.channel);
        let conn = self.conn.clone();
        runtime.spawn(async move {
            let _order = commands.lock().await;
            let sent = {
                let mut map = lock(&registry);
                match map.get_mut(&channel) {
                    Some(entry) if entry.waiters == 0 => {
                        entry.live = false;
                        std::mem::take(&mut entry.on_server)
                    }
                    _ => return, // a new waiter came: the subscription stays
                }
            };
            if sent {
                // Bounded like every Redis call. If it fails, the subscription stays, and its
                // messages find no waiter in the registry.
                let _ = tokio::time::timeout(UNSUBSCRIBE_TIMEOUT, conn.unsubscribe(&channel)).await;
            }
            let mut map = lock(&registry);
            if map.get(&channel).is_some_and(|e| e.waiters == 0) {
                map.remove(&channel);
            }
        });
    }
}
