//! The connections replica confirmations go over (`CacheBuilder::invalidate_replicas`): each
//! carries one confirmation at a time, since `WAIT` blocks its connection on the server, and a
//! second confirmation sent behind it would wait out the first's `within` inside its own
//! deadline. Concurrent confirmations take a connection each, up to [`MAX_CONNECTIONS`].

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::conn::Conn;

/// How many confirmation connections one cache opens at most; a confirmation beyond them
/// waits for one, within its own deadline.
pub(crate) const MAX_CONNECTIONS: usize = 16;

/// Makes a confirmation connection; it must not connect yet (the first command connects,
/// under the caller's deadline).
pub(crate) type MakeConn = Box<dyn Fn() -> redis::RedisResult<Conn> + Send + Sync>;

/// Idle confirmation connections, and leave to use one.
pub(crate) struct ConfirmPool {
    make: MakeConn,
    idle: Mutex<Vec<Conn>>,
    slots: Semaphore,
}

/// A connection lent to one confirmation. Dropped without [`Lent::give_back`] (the call failed,
/// timed out or was cancelled, and its `WAIT` may still hold the connection on the server),
/// the connection is closed rather than lent again.
pub(crate) struct Lent<'a> {
    pool: &'a ConfirmPool,
    conn: Option<Conn>,
    _slot: SemaphorePermit<'a>,
}

impl ConfirmPool {
    pub(crate) fn new(make: MakeConn) -> ConfirmPool {
        ConfirmPool {
            make,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(MAX_CONNECTIONS),
        }
    }

    /// A connection of its own for one confirmation: an idle one, or a new one. Waits at most
    /// `within` for a free slot (`None`: every connection stayed busy that long). No lock is
    /// held across an await.
    pub(crate) async fn lend(&self, within: Duration) -> Option<redis::RedisResult<Lent<'_>>> {
        let slot = tokio::time::timeout(within, self.slots.acquire())
            .await
            .ok()?
            .ok()?;
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => match (self.make)() {
                Ok(conn) => conn,
                Err(e) => return Some(Err(e)),
            },
        };
        Some(Ok(Lent {
            pool: self,
            conn: Some(conn),
            _slot: slot,
        }))
    }
}

impl Lent<'_> {
    pub(crate) fn conn(&self) -> &Conn {
        self.conn.as_ref().expect("lent until given back")
    }

    /// The confirmation was answered: the connection is free for the next one.
    pub(crate) fn give_back(mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.push(conn);
        }
    }
}
