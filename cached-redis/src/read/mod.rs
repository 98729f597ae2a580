//! The read path, in the order a call takes it: [`fetch`] (a hit; on a miss, join or lead the
//! process's one load of the key, [`flight`]; take the key's lease, held by a
//! [`lease_guard`], load, write back under it), and [`wake`] (waiters in other processes woken through pub/sub when the value lands).

pub(crate) mod fetch;
pub(crate) mod flight;
pub(crate) mod lease_guard;
pub(crate) mod wake;
