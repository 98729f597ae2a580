//! The lease right after a `GET` found no value: `SET NX PX` on the lease and a `GET` of the
//! value, pipelined, in one round trip and without the lease script.
//!
//! The lease script costs Redis about three times what those two commands do (7.2 µs against
//! 2.4 on the benchmark's machine, `INFO commandstats`), and a miss among hits waits for it.
//! The pair is not atomic, and need not be: a value can only be stored under the lease, so a
//! value stored between the caller's `GET` and the `SET NX` is there before the lease is
//! taken, and the `GET` after it sees it. That value answers the call, and the lease, taken for
//! nothing, is given back (the guard stays armed; a release frees only a lease holding its
//! token). Where the `SET NX` finds the lease held, by
//! another caller or by this one (a send whose reply was lost), the lease script tells which,
//! and for how long: a caller that meets another's load waits for it, so one more round trip
//! costs it nothing it would notice.

use redis::{RedisError, Value};

use super::EntryKeys;

/// What the pipeline found.
#[derive(Debug)]
pub(crate) enum AfterMiss {
    /// The lease is ours and there is still no value: load.
    Leased,
    /// A value is there now. The lease may be this caller's: taken by this send, or by an
    /// earlier send of the same pipeline whose reply was lost (redis-rs's cluster client sends
    /// a pipeline again after an I/O error), where this one's `SET NX` finds it held. It is
    /// given back either way: the release frees only a lease holding the caller's token.
    Value(Vec<u8>),
    /// The lease is held and there is no value: the lease script is to be asked.
    Held,
}

/// Sends `SET <lease> <token> NX PX <lock_ms>` and `GET <value>` together.
pub(crate) async fn take(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &EntryKeys,
    token: &str,
    lock_ms: u64,
) -> redis::RedisResult<AfterMiss> {
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(&keys.lease)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(lock_ms)
        .cmd("GET")
        .arg(&keys.value);
    let (set, value): (Value, Option<Vec<u8>>) = pipe.query_async(conn).await?;
    Ok(match value {
        Some(bytes) => AfterMiss::Value(bytes),
        None if matches!(set, Value::Okay) => AfterMiss::Leased,
        None => AfterMiss::Held,
    })
}

/// Whether an error of [`take`] leaves Redis's answer unknown (no reply came), as opposed to
/// Redis answering with an error (a key of another type, a cluster's redirect, `OOM`), which
/// the lease script, asked next, answers as it always has.
pub(crate) fn unanswered(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}
