//! Bulk removal (`Cache::clear`, `Cache::invalidate_prefix`): `SCAN MATCH` over every primary
//! and `UNLINK` of what it finds, in two full passes.

use crate::Error;
use crate::cache::Inner;
use crate::conn::Conn;

/// How many keys one `SCAN` step asks for, and so at most how many one `UNLINK` batch removes.
const BATCH: u64 = 500;

/// Removes every key matching one of `patterns` and wakes the waiters of removed leases,
/// in two full passes. SCAN returns every key present for its whole iteration, but a load
/// whose write-back lands mid-scan can create its value behind the cursor and delete its
/// lease ahead of it. Such a lease was present for the whole first pass if the write-back
/// comes during the second (so the first pass revoked it and the write-back is refused),
/// and such a value is present for the whole second pass if the write-back came during the
/// first: after both, no value loaded before the call began is left. The second pass
/// leaves leases alone: any it finds were taken after the first pass began, by loads that
/// read the data after the call did.
pub(crate) async fn remove_matching(inner: &Inner, patterns: &[String]) -> Result<u64, Error> {
    let primaries = inner
        .guard
        .read(&inner.stats, "CLUSTER NODES", inner.reads.primaries())
        .await?;
    let mut nodes = Vec::with_capacity(primaries.len());
    for node in &primaries {
        let connecting = Conn::bulk_at(&inner.reads, &inner.writes, node);
        nodes.push(
            inner
                .guard
                .read(&inner.stats, "CONNECT", connecting)
                .await?,
        );
    }
    let mut removed = 0u64;
    for leases_too in [true, false] {
        for pattern in patterns {
            for (scan, unlink) in &nodes {
                removed += remove_on_node(inner, scan, unlink, pattern, leases_too).await?;
            }
        }
    }
    Ok(removed)
}

/// One pass of `SCAN MATCH pattern` over one node in batches, unlinking what it finds
/// (leases only if `leases_too`).
async fn remove_on_node(
    inner: &Inner,
    scan: &Conn,
    unlink: &Conn,
    pattern: &str,
    leases_too: bool,
) -> Result<u64, Error> {
    let mut removed = 0u64;
    let mut cursor = 0u64;
    loop {
        let mut step = redis::cmd("SCAN");
        step.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(BATCH);
        let mut conn = scan.clone();
        let scanned = step.query_async::<(u64, Vec<String>)>(&mut conn);
        let (next, mut keys) = inner.guard.read(&inner.stats, "SCAN", scanned).await?;
        if !leases_too {
            keys.retain(|key| !key.ends_with(":lease"));
        }
        if !keys.is_empty() {
            let unlinking = unlink_all(unlink, inner.writes.publish_command(), &keys);
            removed += inner.guard.write(&inner.stats, "UNLINK", unlinking).await?;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// Unlinks `keys` in one pipeline over the connection that found them (on a cluster, the
/// node that owns their slots: a slot that moved since answers `MOVED`, and the call fails
/// rather than skip it), waking the waiters of any lease among them.
async fn unlink_all(conn: &Conn, publish: &str, keys: &[String]) -> redis::RedisResult<u64> {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("UNLINK").arg(key);
        if let Some(entry) = key.strip_suffix(":lease") {
            pipe.cmd(publish)
                .arg(format!("{entry}:wake"))
                .arg("cleared")
                .ignore();
        }
    }
    let counts: Vec<u64> = pipe.query_async(&mut conn.clone()).await?;
    Ok(counts.iter().sum())
}

/// Escapes the characters `SCAN MATCH` treats as a glob.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
