//! Bulk removal (`Cache::clear`, `Cache::invalidate_prefix`): `SCAN MATCH` over every primary
//! and `UNLINK` of what it finds, in two full passes; on a cluster, only while no slot moves.

use redis::aio::{ConnectionLike, MultiplexedConnection};

use crate::Error;
use crate::cache::Inner;
use crate::conn::topology::{self, Slots};
use crate::conn::{Conn, LazyCluster};
use crate::write::replicated::Replicated;

/// Which of the keys `SCAN MATCH` found to remove (a glob cannot say "one template's keys").
pub(crate) type Keep<'a> = &'a (dyn Fn(&str) -> bool + Sync);

/// How many keys one `SCAN` step asks for, and so at most how many one `UNLINK` batch removes.
const BATCH: u64 = 500;

/// Removes every key matching one of `patterns` and wakes the waiters of removed leases,
/// in two full passes. SCAN returns every key present for its whole iteration, but a load
/// whose write-back lands mid-scan can create its value behind the cursor and delete its
/// lease ahead of it. Such a lease was present for the whole first pass if the write-back
/// comes during the second (so the first pass revoked it and the write-back is refused),
/// and such a value is present for the whole second pass if the write-back came during the
/// first: after both, no value loaded before the call began is left. Both passes revoke the
/// leases they find: one taken during the call only loses its write-back, and one the first
/// pass missed (its server restarted mid-cursor) does not outlive the second.
/// Only the keys `keep` accepts are removed.
pub(crate) async fn remove_matching(
    inner: &Inner,
    patterns: &[String],
    keep: Keep<'_>,
) -> Result<u64, Error> {
    if inner.disabled {
        return Ok(0);
    }
    let removed = remove_matching_everywhere(inner, patterns, keep).await;
    // Whatever the outcome: some keys may have gone.
    if let Some(near) = &inner.near {
        near.flush();
    }
    removed
}

/// [`remove_matching`] on a cluster's every master, or on the one Redis.
async fn remove_matching_everywhere(
    inner: &Inner,
    patterns: &[String],
    keep: Keep<'_>,
) -> Result<u64, Error> {
    if let Conn::Cluster(lazy) = &inner.reads {
        return remove_on_cluster(inner, lazy, patterns, keep).await;
    }
    // Behind Sentinel, the scans, the removals and the confirmation must all reach one
    // primary: a failover between them could lose removals with the old one, or continue a
    // scan's cursor on a node that never issued it.
    let primary = inner.writes.primary_generation();
    let one = [(inner.reads.clone(), inner.writes.clone())];
    let removed = two_passes(inner, &one, patterns, keep).await?;
    if let Some(replicated) = &inner.replicated {
        // Even when nothing was removed: a retry after `NotReplicated` finds nothing left on
        // the primary, and must not answer `Ok` before the replicas have the first call's
        // removals.
        replicated.confirm_all(inner.report()).await?;
    }
    if inner.writes.primary_generation() != primary {
        return Err(moved("the primary changed during the removal"));
    }
    Ok(removed)
}

/// The two passes over every master, each over a plain connection of its own, between two
/// readings of the slots each master serves: they must cover every slot once, with none
/// migrating, and be the same after the passes as before, or the call fails (`Err`) rather
/// than claim a removal a moving slot may have dodged.
async fn remove_on_cluster(
    inner: &Inner,
    lazy: &LazyCluster,
    patterns: &[String],
    keep: Keep<'_>,
) -> Result<u64, Error> {
    let guard = &inner.guard;
    let masters = guard
        .read(&inner.stats, "CLUSTER NODES", lazy.masters())
        .await?;
    let mut nodes = Vec::with_capacity(masters.len());
    for master in &masters {
        // Outside the breaker: a master this call cannot reach says nothing about the hits.
        let connecting = lazy.direct(master);
        nodes.push(guard.bounded(&inner.stats, "CONNECT", connecting).await?);
    }
    let before = served_slots(inner, &nodes).await?;
    let pairs: Vec<_> = nodes.iter().map(|n| (n.clone(), n.clone())).collect();
    let removed = two_passes(inner, &pairs, patterns, keep).await?;
    if let Some(replicated) = &inner.replicated {
        confirm_nodes(inner, replicated, &nodes, &before).await?;
    }
    if served_slots(inner, &nodes).await? != before {
        return Err(moved("the slots moved during the removal"));
    }
    Ok(removed)
}

/// Waits until each master's replicas have every write it ran before (this call's unlinks,
/// and an earlier call's that found nothing left this time), over this call's connection to
/// it, with a mark in a slot it serves. A master that serves no slot holds no entry.
async fn confirm_nodes(
    inner: &Inner,
    replicated: &Replicated,
    nodes: &[MultiplexedConnection],
    slots: &[Slots],
) -> Result<(), Error> {
    for (node, slots) in nodes.iter().zip(slots) {
        if let Some(tag) = topology::tag_in(slots) {
            let mark = format!("{}:replicated:{{{tag}}}", inner.namespace);
            replicated.confirm_on(inner.report(), node, &mark).await?;
        }
    }
    Ok(())
}

/// The slots each master serves by its own account, checked to cover every slot once.
async fn served_slots(inner: &Inner, nodes: &[MultiplexedConnection]) -> Result<Vec<Slots>, Error> {
    let mut claims = Vec::with_capacity(nodes.len());
    for node in nodes {
        let (mut conn, mut nodes) = (node.clone(), redis::cmd("CLUSTER"));
        nodes.arg("NODES");
        let asking = nodes.query_async::<String>(&mut conn);
        let text = inner
            .guard
            .read(&inner.stats, "CLUSTER NODES", asking)
            .await?;
        claims.push(topology::own_slots(&text).map_err(moved)?);
    }
    topology::check_cover(&claims).map_err(moved)?;
    Ok(claims)
}

fn moved(why: impl Into<String>) -> Error {
    let why = why.into();
    Error::Redis(redis::RedisError::from((
        redis::ErrorKind::Client,
        "a bulk removal cannot be sure to reach every slot; retry",
        why,
    )))
}

/// Both passes over every `(scan, unlink)` pair of connections.
async fn two_passes<C>(
    inner: &Inner,
    nodes: &[(C, C)],
    patterns: &[String],
    keep: Keep<'_>,
) -> Result<u64, Error>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    let mut removed = 0u64;
    for _pass in 0..2 {
        for pattern in patterns {
            for (scan, unlink) in nodes {
                removed += remove_on_node(inner, (scan, unlink), pattern, keep).await?;
            }
        }
    }
    Ok(removed)
}

/// One pass of `SCAN MATCH pattern` over one node in batches, unlinking what it finds.
async fn remove_on_node<C>(
    inner: &Inner,
    (scan, unlink): (&C, &C),
    pattern: &str,
    keep: Keep<'_>,
) -> Result<u64, Error>
where
    C: ConnectionLike + Clone + Send + Sync,
{
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
        keys.retain(|key| keep(key));
        if !keys.is_empty() {
            removed += unlink_all(inner, unlink, &keys).await?;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// Unlinks `keys` in one pipeline over the connection that found them (on a cluster, the
/// node that owns their slots: a slot that moved since answers `MOVED`, and the call fails
/// rather than skip it), waking the waiters of any lease among them. With
/// `invalidate_replicas`, the removal is confirmed once, after the last batch.
async fn unlink_all<C>(inner: &Inner, conn: &C, keys: &[String]) -> Result<u64, Error>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("UNLINK").arg(key);
        if let Some(entry) = key.strip_suffix(":lease") {
            pipe.cmd(inner.writes.publish_command())
                .arg(format!("{entry}:wake"))
                .arg("cleared")
                .ignore();
        }
    }
    let mut conn = conn.clone();
    let unlinking = pipe.query_async::<Vec<u64>>(&mut conn);
    let counts = inner.guard.write(&inner.stats, "UNLINK", unlinking).await?;
    Ok(counts.iter().sum())
}
