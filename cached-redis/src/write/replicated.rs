//! Invalidations and updates that wait for replicas (`CacheBuilder::invalidate_replicas`).
//!
//! `WAIT` confirms the writes of the connection it is sent on, and only those: on a connection
//! that wrote nothing (a retry whose script found the entry already gone, a bulk removal that
//! found nothing left to unlink, a connection opened since the writes) it answers at once,
//! whatever the replicas hold. So every confirmation writes a *mark* first, a script that sets
//! and deletes one key: the primary runs one command at a time, so the mark enters the
//! replication stream after every write it ran before, on any connection, and a replica that
//! acknowledges the mark has all of them. `Ok` then means the replicas have the change, on the
//! first call and on every retry.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Pipeline, Value};

use crate::Error;
use crate::conn::guard::Guard;
use crate::lease::{self, EntryKeys};
use crate::stats::Counters;
use crate::write::confirm_pool::{ConfirmPool, MakeConn};

/// Sets and deletes its key: a write that always reaches the replication stream and leaves
/// nothing behind, allowed when the primary is out of memory (`noeviction` at `maxmemory`
/// refuses a plain `SET`, and an invalidation that removed the entry must not answer `OOM`).
const MARK: &str =
    "#!lua flags=allow-oom\nredis.call('SET', KEYS[1], '1') redis.call('DEL', KEYS[1]) return 1";

/// Confirmations by the replicas, over connections of their own (`WAIT` blocks the connection
/// it is sent on: hits and write-backs must not queue behind it, nor one confirmation behind
/// another), under a breaker of their own.
pub(crate) struct Replicated {
    pool: ConfirmPool,
    replicas: u32,
    within: Duration,
    /// The cache's namespace, which marks are named in.
    namespace: String,
    /// The command that wakes waiters on the deployment (`PUBLISH`, or `SPUBLISH` on a
    /// cluster), for the invalidation script.
    publish: &'static str,
}

/// Where a confirmation's outcome is counted: the cache's guard and counters.
#[derive(Clone, Copy)]
pub(crate) struct Report<'a> {
    pub(crate) guard: &'a Guard,
    pub(crate) stats: &'a Counters,
}

impl Replicated {
    /// `replicas` confirmations within `within`, for a cache named `namespace` on a deployment
    /// whose waiters `publish` wakes.
    pub(crate) fn new(
        make: MakeConn,
        (replicas, within): (u32, Duration),
        namespace: &str,
        publish: &'static str,
    ) -> Replicated {
        Replicated {
            pool: ConfirmPool::new(make),
            replicas,
            within,
            namespace: namespace.to_owned(),
            publish,
        }
    }

    /// The invalidation script, then the mark and `WAIT` on the same connection.
    pub(crate) async fn invalidate(
        &self,
        report: Report<'_>,
        keys: &EntryKeys,
    ) -> Result<bool, Error> {
        let eval = lease::invalidate_eval(keys, self.publish);
        self.script(report, "invalidate", keys, eval).await
    }

    /// An update's compare-and-set, then the mark and `WAIT`: whether it replaced the value.
    pub(crate) async fn compare_and_set(
        &self,
        report: Report<'_>,
        keys: &EntryKeys,
        read: &[u8],
        replacement: &[u8],
    ) -> Result<bool, Error> {
        let eval = lease::compare_and_set_eval(keys, read, replacement);
        self.script(report, "update", keys, eval).await
    }

    /// A script over one entry (`EVAL`), the mark in the entry's slot and `WAIT`, in one
    /// pipeline to the entry's primary; the script's reply once the replicas confirmed.
    async fn script(
        &self,
        report: Report<'_>,
        what: &'static str,
        keys: &EntryKeys,
        eval: redis::Cmd,
    ) -> Result<bool, Error> {
        let mut pipe = redis::pipe();
        pipe.add_command(eval);
        let mark = entry_mark(&self.namespace, &keys.value);
        let replies = self.pooled(report, what, &keys.value, pipe, &mark).await?;
        let reply = replies.into_iter().next().unwrap_or(Value::Nil);
        redis::from_redis_value::<bool>(reply).map_err(|e| Error::Redis(e.into()))
    }

    /// Waits until the replicas have every write the primary ran before this call (a bulk
    /// removal's unlinks, made over other connections): one Redis, or behind Sentinel.
    pub(crate) async fn confirm_all(&self, report: Report<'_>) -> Result<(), Error> {
        let mark = format!("{}:replicated", self.namespace);
        self.pooled(report, "WAIT", &mark, redis::pipe(), &mark)
            .await
            .map(drop)
    }

    /// [`Replicated::confirm_all`] on one cluster primary, over `conn` (a bulk removal's own
    /// plain connection to it), with `mark` a key of a slot that node serves.
    pub(crate) async fn confirm_on<C>(
        &self,
        report: Report<'_>,
        conn: &C,
        mark: &str,
    ) -> Result<(), Error>
    where
        C: ConnectionLike + Clone + Send + Sync,
    {
        let mut pipe = redis::pipe();
        self.append_confirmation(&mut pipe, mark, self.within);
        let mut conn = conn.clone();
        let sent = pipe.query_async::<Vec<Value>>(&mut conn);
        let guard = report.guard;
        let replies = guard
            .confirm_within(report.stats, "WAIT", self.within, sent)
            .await?;
        self.acknowledged(replies).map(drop)
    }

    /// Sends `pipe`, the mark and `WAIT` over a connection of their own, routed by `route`,
    /// and returns `pipe`'s replies once the replicas confirmed. The whole call, the wait
    /// for a free connection included, takes at most `within` plus `op_timeout`.
    async fn pooled(
        &self,
        report: Report<'_>,
        what: &'static str,
        route: &str,
        mut pipe: Pipeline,
        mark: &str,
    ) -> Result<Vec<Value>, Error> {
        let started = tokio::time::Instant::now();
        // Past `within` with every connection busy, nothing was sent: a timeout, and no
        // outage for the breaker.
        let Some(lent) = self.pool.lend(self.within).await else {
            return Err(Error::Timeout(self.within));
        };
        // The time spent waiting for a connection comes out of the server-side wait.
        let left = self.within.saturating_sub(started.elapsed());
        let wait = left.max(Duration::from_millis(1));
        self.append_confirmation(&mut pipe, mark, wait);
        let sent = async {
            let lent = lent?;
            let replies = lent.conn().pipeline_at(route, pipe).await?;
            lent.give_back();
            Ok(replies)
        };
        let guard = report.guard;
        let replies = guard.confirm_within(report.stats, what, wait, sent).await?;
        self.acknowledged(replies)
    }

    /// The mark (on `mark`) and `WAIT` for at most `wait` (never 0: `WAIT 0` waits forever).
    fn append_confirmation(&self, pipe: &mut Pipeline, mark: &str, wait: Duration) {
        pipe.cmd("EVAL").arg(MARK).arg(1).arg(mark);
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        pipe.cmd("WAIT").arg(self.replicas).arg(wait_ms);
    }

    /// The replies before the mark, if the mark was written and enough replicas confirmed
    /// it; `Err(NotReplicated)` if too few did.
    fn acknowledged(&self, mut replies: Vec<Value>) -> Result<Vec<Value>, Error> {
        let waited = replies.pop().unwrap_or(Value::Nil);
        let marked = replies.pop().unwrap_or(Value::Nil);
        marked.extract_error().map_err(Error::Redis)?;
        let waited = waited.extract_error().map_err(Error::Redis)?;
        let acknowledged =
            redis::from_redis_value::<u32>(waited).map_err(|e| Error::Redis(e.into()))?;
        if acknowledged < self.replicas {
            return Err(Error::NotReplicated {
                acknowledged,
                wanted: self.replicas,
            });
        }
        Ok(replies)
    }
}

/// The mark of one entry: in the entry's hash slot (the same `{...}` tag), so that on a cluster
/// it goes to the entry's primary, and outside the `<namespace>:{` keys that bulk removals
/// scan.
fn entry_mark(namespace: &str, value_key: &str) -> String {
    let tagged = value_key.get(namespace.len() + 1..).unwrap_or(value_key);
    format!("{namespace}:replicated:{tagged}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_mark_shares_the_entry_slot_but_not_its_pattern() {
        let keys = EntryKeys::new("app", &crate::Key::raw("user:42:v1"));
        let mark = entry_mark("app", &keys.value);
        assert_eq!(mark, "app:replicated:{user:42:v1}");
        assert!(!mark.starts_with("app:{"));
        let slot = redis::cluster_routing::Slot::for_key;
        assert_eq!(slot(&mark), slot(&keys.value));
    }
}
