//! The Lua scripts that give the lease its guarantees.
//!
//! Every script touches only the entry's value key and lease key, which share a hash tag
//! (`ns:{key}` and `ns:{key}:lease`), so the scripts also run on Redis Cluster.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::EntryKeys;
use super::call::{Call, NUMBER};

/// Returns the value if present (and not the known-corrupt bytes in ARGV[3]); otherwise takes
/// the lease (`SET NX PX`) or reports how long the current holder still has it. A key of the
/// wrong type (someone `LPUSH`ed to it) counts as no value; the write-back's `SET` replaces it.
/// A lease that already holds our token is ours: the script ran before and its reply was lost
/// (a client retry sends it again). A lease key no caller could have set (of another type, or
/// without a TTL: every lease is set with `PX` and renewed with `PEXPIRE`) would never expire
/// nor be given back, and its waiters would wait for ever: it is taken over.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' then v = false end
if v and v ~= ARGV[3] then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
local held = redis.pcall('GET', KEYS[2])
if held == ARGV[1] then return {2} end
local ttl = redis.call('PTTL', KEYS[2])
if type(held) == 'table' or ttl < 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return {2}
end
return {3, ttl}
",
    )
});

/// Writes the value only while the lease still holds our token, then frees the lease and wakes
/// waiters. Returns 1 when stored, 0 when the lease was revoked or lost. The last argument of
/// every script that wakes waiters (this one, `RELEASE` and `INVALIDATE`) is the publish
/// command: `PUBLISH`, or `SPUBLISH` on a cluster.
static WRITE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
redis.call(ARGV[5], ARGV[4], 'stored')
return 1
",
    )
});

/// Frees the lease if it still holds our token and wakes waiters. Returns 1 if it did.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call(ARGV[3], ARGV[2], 'released')
return 1
",
    )
});

/// Extends the lease if it still holds our token. Returns 1 if it did.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
",
    )
});

/// Deletes the value and revokes any lease, then wakes waiters. Returns 1 if a value was
/// deleted.
static INVALIDATE: LazyLock<Script> = LazyLock::new(|| Script::new(INVALIDATE_SOURCE));

const INVALIDATE_SOURCE: &str = r"
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call(ARGV[2], ARGV[1], 'invalidated')
return n
";

/// Replaces the value with ARGV[2] only if it still holds the bytes ARGV[1] an update read,
/// keeping its remaining TTL (`PTTL`, then `SET PX`: `KEEPTTL` needs Redis 6), and deletes the
/// entry's lease: a refresh of the entry (`stale`, early refresh) holds one while the value is
/// there, and its load may have read the data before the write, so its write-back must be
/// refused. Never creates an entry. Returns 1 when replaced, and when the value already is
/// ARGV[2]: a run sent again after its reply was lost must not look like a conflict, or the
/// change would be applied twice.
static COMPARE_AND_SET: LazyLock<Script> = LazyLock::new(|| Script::new(COMPARE_AND_SET_SOURCE));

const COMPARE_AND_SET_SOURCE: &str = r"
local v = redis.pcall('GET', KEYS[1])
if v == ARGV[2] then return 1 end
if v ~= ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
redis.call('DEL', KEYS[2])
return 1
";

/// Reads the value for an update's first round and deletes the entry's lease: a load that
/// holds it (a refresh of a `stale` entry, say) may have read the data before the write, and
/// its write-back, refused now, cannot replace the entry between the update's read and its
/// compare-and-set, where the update would take it for a newer load.
static READ_REVOKING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[2])
return v
",
    )
});

pub(crate) async fn read_revoking(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &EntryKeys,
) -> redis::RedisResult<Option<Vec<u8>>> {
    Call::new(&READ_REVOKING, &[&keys.value, &keys.lease], 0)
        .invoke(conn)
        .await
}

/// What [`acquire`] found.
#[derive(Debug)]
pub(crate) enum Acquire {
    Value(Vec<u8>),
    Leased,
    HeldFor { millis: u64 },
}

pub(crate) async fn acquire(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &EntryKeys,
    token: &str,
    lock_ms: u64,
    corrupt: Option<&[u8]>,
) -> redis::RedisResult<Acquire> {
    let room = token.len() + NUMBER + corrupt.map_or(0, <[u8]>::len);
    let mut call = Call::new(&ACQUIRE, &[&keys.value, &keys.lease], room);
    call.arg(token).arg(lock_ms);
    if let Some(bytes) = corrupt {
        call.arg(bytes);
    }
    let mut reply: Vec<Value> = call.invoke(conn).await?;
    match reply.as_mut_slice() {
        // Taken, not copied: the value may be large.
        [Value::Int(1), Value::BulkString(bytes)] => Ok(Acquire::Value(std::mem::take(bytes))),
        [Value::Int(2)] => Ok(Acquire::Leased),
        [Value::Int(3), Value::Int(pttl)] => Ok(Acquire::HeldFor {
            millis: u64::try_from(*pttl).unwrap_or(0).max(1),
        }),
        other => Err((
            redis::ErrorKind::UnexpectedReturnType,
            "unexpected reply from the lease script",
            format!("{other:?}"),
        )
            .into()),
    }
}

pub(crate) async fn write_back(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &EntryKeys,
    token: &str,
    payload: &[u8],
    ttl_ms: u64,
    publish: &str,
) -> redis::RedisResult<bool> {
    let room = token.len() + payload.len() + NUMBER + keys.channel.len() + publish.len();
    let mut call = Call::new(&WRITE_BACK, &[&keys.value, &keys.lease], room);
    call.arg(token)
        .arg(payload)
        .arg(ttl_ms)
        .arg(&keys.channel)
        .arg(publish);
    call.invoke(conn).await
}

pub(crate) async fn release(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &EntryKeys,
    token: &str,
    publish: &str,
) -> redis::RedisResult<bool> {
    let room = token.len() + keys.channel.len() + publish.len();
    let mut call = Call::new(&RELEASE, &[&keys.lease], room);
    call.arg(token).arg(&keys.channel).arg(publish);
    call.invoke(conn).await
}

pub(crate) async fn renew(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &EntryKeys,
    token: &str,
    lock_ms: u64,
) -> redis::RedisResult<bool> {
    let mut call = Call::new(&RENEW, &[&keys.lease], token.len() + NUMBER);
    call.arg(token).arg(lock_ms);
    call.invoke(conn).await
}

pub(crate) async fn invalidate(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &EntryKeys,
    publish: &str,
) -> redis::RedisResult<bool> {
    let room = keys.channel.len() + publish.len();
    let mut call = Call::new(&INVALIDATE, &[&keys.value, &keys.lease], room);
    call.arg(&keys.channel).arg(publish);
    call.invoke(conn).await
}

pub(crate) async fn compare_and_set(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &EntryKeys,
    read: &[u8],
    replacement: &[u8],
) -> redis::RedisResult<bool> {
    let room = read.len() + replacement.len();
    let mut call = Call::new(&COMPARE_AND_SET, &[&keys.value, &keys.lease], room);
    call.arg(read).arg(replacement);
    call.invoke(conn).await
}

/// [`compare_and_set`] as a plain `EVAL`, for a pipeline that `WAIT`s after it.
pub(crate) fn compare_and_set_eval(
    keys: &EntryKeys,
    read: &[u8],
    replacement: &[u8],
) -> redis::Cmd {
    let mut eval = redis::cmd("EVAL");
    eval.arg(COMPARE_AND_SET_SOURCE)
        .arg(2)
        .arg(&keys.value)
        .arg(&keys.lease)
        .arg(read)
        .arg(replacement);
    eval
}

/// The invalidation as a plain `EVAL` (the script's text, so it needs no `SCRIPT LOAD`),
/// for a pipeline that must send it and what follows on one connection, in order.
pub(crate) fn invalidate_eval(keys: &EntryKeys, publish: &str) -> redis::Cmd {
    let mut eval = redis::cmd("EVAL");
    eval.arg(INVALIDATE_SOURCE)
        .arg(2)
        .arg(&keys.value)
        .arg(&keys.lease)
        .arg(&keys.channel)
        .arg(publish);
    eval
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Key;

    /// A `redis-server` of this test's own on a free loopback port, killed when dropped.
    struct Server(std::process::Child, u16);

    impl Server {
        fn start() -> Server {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server on PATH");
            Server(child, port)
        }

        async fn conn(&self) -> redis::aio::MultiplexedConnection {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.1)).unwrap();
            for _ in 0..200 {
                if let Ok(conn) = client.get_multiplexed_async_connection().await {
                    return conn;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("redis-server did not start");
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A lease script sent again (redis-rs retries a command whose reply was lost, and
    /// `invoke` retries a redirect) finds the lease its first run took: the caller holds it,
    /// it does not wait on itself until the lease expires.
    #[tokio::test]
    async fn a_repeated_acquire_finds_its_own_lease() {
        let server = Server::start();
        let mut conn = server.conn().await;
        let keys = EntryKeys::new("t", &Key::raw("k"));
        let first = acquire(&mut conn, &keys, "token-1", 5_000, None)
            .await
            .unwrap();
        assert!(matches!(first, Acquire::Leased), "{first:?}");
        let again = acquire(&mut conn, &keys, "token-1", 5_000, None)
            .await
            .unwrap();
        assert!(matches!(again, Acquire::Leased), "{again:?}");
        let other = acquire(&mut conn, &keys, "token-2", 5_000, None)
            .await
            .unwrap();
        assert!(matches!(other, Acquire::HeldFor { .. }), "{other:?}");
    }

    /// A Redis that lost the scripts (restarted, `SCRIPT FLUSH`ed, a replica promoted before
    /// they reached it) is sent each again, and the call runs: the lease is taken, the value
    /// written back with its bytes intact and handed back whole by the next acquire.
    #[tokio::test]
    async fn scripts_redis_lost_are_loaded_again() {
        let server = Server::start();
        let mut conn = server.conn().await;
        let keys = EntryKeys::new("t", &Key::raw("k"));
        let flush = || async {
            let mut conn = server.conn().await;
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut conn)
                .await
                .unwrap();
        };
        flush().await;
        let first = acquire(&mut conn, &keys, "token-1", 5_000, None)
            .await
            .unwrap();
        assert!(matches!(first, Acquire::Leased), "{first:?}");
        flush().await;
        let bytes = b"\xff\x00not utf-8".repeat(100);
        assert!(
            write_back(&mut conn, &keys, "token-1", &bytes, 60_000, "PUBLISH")
                .await
                .unwrap()
        );
        flush().await;
        match acquire(&mut conn, &keys, "token-2", 5_000, None)
            .await
            .unwrap()
        {
            Acquire::Value(found) => assert_eq!(found, bytes),
            other => panic!("{other:?}"),
        }
        flush().await;
        assert!(invalidate(&mut conn, &keys, "PUBLISH").await.unwrap());
    }

    /// A compare-and-set sent again after its reply was lost finds its own result, and says
    /// it succeeded: a conflict would run the change a second time.
    #[tokio::test]
    async fn a_repeated_compare_and_set_succeeds_once_applied() {
        let server = Server::start();
        let mut conn = server.conn().await;
        let keys = EntryKeys::new("t", &Key::raw("k"));
        let absent = compare_and_set(&mut conn, &keys, b"old", b"new")
            .await
            .unwrap();
        assert!(!absent, "never creates an entry");
        let _: () = redis::cmd("SET")
            .arg(&keys.value)
            .arg("old")
            .arg("PX")
            .arg(60_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            compare_and_set(&mut conn, &keys, b"old", b"new")
                .await
                .unwrap()
        );
        assert!(
            compare_and_set(&mut conn, &keys, b"old", b"new")
                .await
                .unwrap()
        );
        assert!(
            !compare_and_set(&mut conn, &keys, b"old", b"newer")
                .await
                .unwrap()
        );
    }
}
