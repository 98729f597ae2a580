//! Waking waiters through Redis pub/sub instead of polling.
//!
//! A caller that finds another process holding an entry's lease subscribes to the entry's
//! channel *before* checking the value again, so a write-back that lands in between is either
//! seen by that check or announced on the channel. Subscriptions are counted per channel and
//! dropped when the last waiter leaves; subscribe and unsubscribe commands are serialized so an
//! unsubscribe can never overtake a newer subscribe.
//!
//! The subscriber is a dedicated RESP3 connection that reconnects and resubscribes by itself.
//! When it drops, every waiter is woken to check again; a waiter never sleeps past the lease's
//! expiry, so a lost message costs at most one lease TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::watch;

use crate::conn::Conn;
use crate::guard::Guard;
use crate::stats::Counters;

#[derive(Debug)]
struct Channel {
    waiters: usize,
    subscribed: bool,
    wake: watch::Sender<u64>,
}

type Registry = Arc<Mutex<HashMap<String, Channel>>>;

fn lock(registry: &Registry) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

/// The registry of waited-on channels and the connection that subscribes to them.
pub(crate) struct Wakeups {
    conn: Conn,
    registry: Registry,
    serial: Arc<tokio::sync::Mutex<()>>,
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
        Ok(Wakeups {
            conn,
            registry,
            serial: Arc::default(),
        })
    }

    /// Subscribes to `channel` (or joins an existing subscription). The returned subscription
    /// sees every message published after this returns; `live` is false when Redis could not
    /// be subscribed to, and the caller should poll.
    pub(crate) async fn subscribe(
        &self,
        channel: &str,
        guard: &Guard,
        stats: &Counters,
    ) -> Subscription {
        if let Some(sub) = self.join_subscribed(channel) {
            return sub;
        }
        let _serial = self.serial.lock().await;
        if let Some(sub) = self.join_subscribed(channel) {
            return sub;
        }
        let rx = {
            let mut map = lock(&self.registry);
            let entry = map.entry(channel.to_owned()).or_insert_with(|| Channel {
                waiters: 0,
                subscribed: false,
                wake: watch::Sender::new(0),
            });
            entry.waiters += 1;
            entry.wake.subscribe()
        };
        let mut sub = self.subscription(channel, rx, false);
        if guard
            .call(stats, "SUBSCRIBE", self.conn.subscribe(channel))
            .await
            .is_ok()
        {
            if let Some(entry) = lock(&self.registry).get_mut(channel) {
                entry.subscribed = true;
            }
            sub.live = true;
        }
        sub.rx.mark_unchanged();
        sub
    }

    fn join_subscribed(&self, channel: &str) -> Option<Subscription> {
        let mut map = lock(&self.registry);
        let entry = map.get_mut(channel).filter(|e| e.subscribed)?;
        entry.waiters += 1;
        let rx = entry.wake.subscribe();
        drop(map);
        Some(self.subscription(channel, rx, true))
    }

    /// A waiter's handle on `channel`, counted in the registry already; it sees only messages
    /// that arrive from now on.
    fn subscription(
        &self,
        channel: &str,
        mut rx: watch::Receiver<u64>,
        live: bool,
    ) -> Subscription {
        rx.mark_unchanged();
        Subscription {
            rx,
            live,
            channel: channel.to_owned(),
            registry: self.registry.clone(),
            serial: self.serial.clone(),
            conn: self.conn.clone(),
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
    serial: Arc<tokio::sync::Mutex<()>>,
    conn: Conn,
}

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
        let last = {
            let mut map = lock(&self.registry);
            match map.get_mut(&self.channel) {
                Some(entry) => {
                    entry.waiters -= 1;
                    entry.waiters == 0
                }
                None => false,
            }
        };
        if !last {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            lock(&self.registry).remove(&self.channel);
            return;
        };
        let registry = self.registry.clone();
        let serial = self.serial.clone();
        let channel = std::mem::take(&mut self.channel);
        let conn = self.conn.clone();
        runtime.spawn(async move {
            let _serial = serial.lock().await;
            let was_subscribed = {
                let mut map = lock(&registry);
                match map.get(&channel) {
                    Some(entry) if entry.waiters == 0 => {
                        map.remove(&channel).is_some_and(|e| e.subscribed)
                    }
                    _ => return,
                }
            };
            if was_subscribed {
                // Bounded like every Redis call. If it fails, the subscription stays, and its
                // messages find no waiter in the registry.
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), conn.unsubscribe(&channel)).await;
            }
        });
    }
}
