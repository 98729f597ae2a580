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

use redis::{ErrorKind, RedisError, Value};

use super::EntryKeys;
use crate::conn::command::keyed;

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

/// Sends `SET <lease> <token> NX PX <lock_ms>` and `GET <value>` together. Both commands are
/// built at their size and the two replies read as they come: redis-rs's pipeline builder and
/// its typed reply cost a miss some 2,900 instructions more (callgrind, the benchmark's
/// `instructions` scenario). A reply that is an error (a key of another type, a redirect,
/// `OOM`) is returned as one, as redis-rs's typed reply would.
pub(crate) async fn take(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &EntryKeys,
    token: &str,
    lock_ms: u64,
) -> redis::RedisResult<AfterMiss> {
    let mut pipe = redis::Pipeline::with_capacity(2);
    pipe.add_command(set_nx(&keys.lease, token, lock_ms))
        .add_command(keyed("GET", &[&keys.value]));
    let replies = conn.req_packed_commands(&pipe, 0, 2).await?;
    let [set, value] = <[Value; 2]>::try_from(replies).map_err(|replies| {
        let found = format!("{} replies to a pipeline of 2", replies.len());
        RedisError::from((ErrorKind::UnexpectedReturnType, "lease", found))
    })?;
    let set = set.extract_error()?;
    let value: Option<Vec<u8>> = redis::from_redis_value(value.extract_error()?)?;
    Ok(match value {
        Some(bytes) => AfterMiss::Value(bytes),
        None if matches!(set, Value::Okay) => AfterMiss::Leased,
        None => AfterMiss::Held,
    })
}

/// `SET <lease> <token> NX PX <lock_ms>`, built without growing.
fn set_nx(lease: &str, token: &str, lock_ms: u64) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(6, 3 + lease.len() + token.len() + 4 + 20);
    cmd.arg("SET")
        .arg(lease)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(lock_ms);
    cmd
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

#[cfg(test)]
mod tests {
    use super::set_nx;

    #[test]
    fn the_lease_command_packs_as_the_growing_builder_does() {
        let mut grown = redis::cmd("SET");
        grown
            .arg("ns:{user:1}:lease")
            .arg("a-token")
            .arg("NX")
            .arg("PX")
            .arg(u64::MAX);
        assert_eq!(
            set_nx("ns:{user:1}:lease", "a-token", u64::MAX).get_packed_command(),
            grown.get_packed_command()
        );
    }
}
