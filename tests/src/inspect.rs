//! Reading and writing what the cache stored, behind its back: raw values, TTLs, leases,
//! subscriptions and key scans.

use std::time::Duration;

use cached_redis::Cache;

/// Sets `key` to `value` with a TTL of `millis`, as another process's lease would be.
pub async fn set_px(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    value: &str,
    millis: u64,
) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("PX")
        .arg(millis)
        .query_async(conn)
        .await
        .expect("SET PX");
}

/// How many clients are subscribed to `channel` (`PUBSUB NUMSUB`).
pub async fn numsub(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> u64 {
    let reply: (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await
        .expect("PUBSUB NUMSUB");
    reply.1
}

/// The PTTL of a key in milliseconds (-2 when absent).
pub async fn pttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(conn)
        .await
        .expect("PTTL")
}

/// The raw bytes stored at a key.
pub async fn get_raw(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .expect("GET")
}

/// Empties Redis's script cache, as a restart or a new primary does.
pub async fn flush_scripts(conn: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(conn)
        .await
        .expect("SCRIPT FLUSH");
}

/// Whether `key` exists.
pub async fn exists(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    let n: u64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(conn)
        .await
        .expect("EXISTS");
    n == 1
}

/// Waits, at most `within`, until `key` is gone (a lease let go by a background task): whether
/// it went.
pub async fn gone(conn: &redis::aio::MultiplexedConnection, key: &str, within: Duration) -> bool {
    crate::eventually(within, || {
        let mut conn = conn.clone();
        async move { !exists(&mut conn, key).await }
    })
    .await
}

/// Every key matching `pattern`, sorted, by `SCAN` in batches (never `KEYS`).
pub async fn scan_keys(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys
}

/// Waits (up to 3 s) until the cache has no load in flight and no channel waited on in this
/// process, and fails the test with what is left otherwise.
pub async fn assert_no_state_left(cache: &Cache) {
    let settled = crate::eventually(Duration::from_secs(3), || async {
        cached_redis::__private::in_flight(cache) == (0, 0)
    })
    .await;
    assert!(
        settled,
        "in-process state left (loads in flight, channels waited on): {:?}",
        cached_redis::__private::in_flight(cache)
    );
}

/// `CONFIG SET name value`.
pub async fn config_set(conn: &mut redis::aio::MultiplexedConnection, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async(conn)
        .await
        .unwrap();
}

/// How many times Redis has run the command `name` (lower case), from `INFO commandstats`.
pub async fn command_calls(conn: &mut redis::aio::MultiplexedConnection, name: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{name}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a count"))
}

/// Escapes a key part as `KeyWriter::write_str` documents it (`\`, `:`, `{` and `}` behind a
/// `\`), independently of the library: what a test expects a rendered key to hold.
pub fn escaped(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if matches!(c, '\\' | ':' | '{' | '}') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
