//! The read path, in the order a call takes it: [`fetch`] (the entry: the first GET, [`get`],
//! or for a function whose calls nearly all miss the lease script at once, [`first_read`];
//! a hit answers, a miss joins or leads the process's one load of the key, [`flight`]),
//! [`lead`] (take the key's lease, held by a [`lease_guard`] and given back by [`give_back`] when it is not needed, load, write back under it, in the
//! background once the caller has its value: [`write_backs`]),
//! [`failures`] (how the callers that joined a failed load get its error), [`refresh`] and
//! [`fail_safe`] (an entry due for a refresh, or past its TTL answering for a failed load;
//! [`detach`]: a refresh in a task of its own),
//! [`wait`] (a leader that found the lease held waits for its holder), [`wake`] (waiters
//! in other processes woken through pub/sub when the value lands), and [`near`] (decoded
//! values kept in process memory, dropped by Redis's invalidation messages).

pub(crate) mod back_off;
pub(crate) mod batch;
pub(crate) mod detach;
mod fail_safe;
pub(crate) mod failures;
pub(crate) mod fetch;
pub(crate) mod first_read;
pub(crate) mod flight;
mod get;
mod give_back;
mod lead;
pub(crate) mod lease_guard;
pub(crate) mod near;
mod refresh;
pub(crate) mod score;
mod wait;
pub(crate) mod wake;
pub(crate) mod write_backs;
