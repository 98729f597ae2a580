//! Where the primary is: one discovery per cache, shared by every connection that follows the
//! primary (reads, writes, wake-ups, the replication `WAIT` one).
//!
//! Discovery runs in a task of its own, bounded on its own ([`DISCOVER_WITHIN`] per attempt)
//! and retried until the sentinels name a primary, never inside a caller's bounded call: a
//! sentinel that answers slower than one `op_timeout` (a remote or loaded one) would
//! otherwise make every caller start it over and none finish. Callers wait for it within
//! their own deadline, as they wait for a cluster's first connection.
//!
//! A caller waiting for discovery returns the error of the first attempt that *started*
//! after it began waiting (the data nodes refusing our credentials, a primary that does not
//! answer): what the sentinels said before it arrived, such as "no primary" in the instant
//! before a promotion, is no answer to it.
//!
//! Each primary the sentinels name gets a new *generation*. A connection remembers the
//! generation it was made for; when any connection finds the primary gone (its connection
//! failed, or the node answered `READONLY`) it reports that generation lost, and every other
//! connection of the cache sees the change before its next call: none of them sends another
//! command to the node that was replaced.
//!
//! Errors do not find every replaced primary: one that hangs (a paused process, a host gone
//! without a reset) only makes calls time out, and once it answers again, demoted, it serves
//! reads of what it held. So while a primary is known, the sentinels are also asked every
//! [`CHECK_EVERY`] whether it is still theirs; when they name another, it replaces it as a new
//! generation at once.

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::sentinel::SentinelClient;
use redis::{ConnectionInfo, RedisError, RedisResult};
use tokio::sync::watch;

/// The bound on one attempt to have the sentinels name the primary (their answer and the
/// `ROLE` check of the node they name).
const DISCOVER_WITHIN: Duration = Duration::from_secs(5);

/// The pause between two failed attempts.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// How often the sentinels are asked whether the primary named is still theirs.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the cache knows of the primary right now.
struct Named {
    /// Bumped each time the primary is named or lost.
    generation: u64,
    /// The node the sentinels named last, until a connection to it fails.
    node: Option<ConnectionInfo>,
    /// A discovery task runs.
    discovering: bool,
    /// The task that checks the primary named with the sentinels runs.
    checking: bool,
    /// Attempts started so far.
    attempts: u64,
    /// The last failed attempt's number and error.
    failed: Option<(u64, RedisError)>,
}

/// The shared knowledge of one master name's primary; cheap to clone.
#[derive(Clone)]
pub(crate) struct Primary(Arc<Discovery>);

struct Discovery {
    /// Used by the discovery task alone (one at a time); no caller ever waits on this lock.
    sentinels: tokio::sync::Mutex<SentinelClient>,
    known: watch::Sender<Named>,
}

impl Primary {
    /// Nothing is asked until the first call wants the primary.
    pub(crate) fn new(sentinels: SentinelClient) -> Primary {
        Primary(Arc::new(Discovery {
            sentinels: tokio::sync::Mutex::new(sentinels),
            known: watch::Sender::new(Named {
                generation: 0,
                node: None,
                discovering: false,
                checking: false,
                attempts: 0,
                failed: None,
            }),
        }))
    }

    /// The primary named last and its generation; while none is known, starts a discovery
    /// (unless one runs) and waits for it, or for the failure of an attempt that started
    /// after this call. Callers bound the wait.
    pub(crate) async fn named(&self) -> RedisResult<(u64, ConnectionInfo)> {
        self.check();
        let mut known = self.0.known.subscribe();
        let since = known.borrow().attempts;
        loop {
            {
                let now = known.borrow_and_update();
                if let Some(node) = &now.node {
                    return Ok((now.generation, node.clone()));
                }
                if let Some((attempt, error)) = &now.failed
                    && *attempt > since
                    && !promoting(now.generation, error)
                {
                    return Err(error.clone());
                }
            }
            self.discover();
            // The sender lives as long as `self`: this only returns on a change.
            let _ = known.changed().await;
        }
    }

    /// The generation named or lost last.
    pub(crate) fn generation(&self) -> u64 {
        self.0.known.borrow().generation
    }

    /// The primaries named from now on, for whoever must follow them without making a call.
    pub(crate) fn changes(&self) -> Changes {
        Changes(self.0.known.subscribe())
    }

    /// Reports that the primary of `generation` is gone: the next call of every connection
    /// waits for the sentinels to name one again. A report about an older generation (another
    /// connection reported first, or a newer primary is known) changes nothing.
    pub(crate) fn lost(&self, generation: u64) {
        let lost = self.0.known.send_if_modified(|named| {
            if named.generation != generation || named.node.is_none() {
                return false;
            }
            named.node = None;
            named.generation += 1;
            true
        });
        if lost {
            tracing::debug!("the primary is gone; asking the sentinels again");
            self.discover();
        }
    }

    /// Starts the task that checks the primary with the sentinels, once per cache.
    fn check(&self) {
        let mut start = false;
        self.0.known.send_if_modified(|named| {
            start = !named.checking;
            named.checking = true;
            false
        });
        if start {
            tokio::spawn(check(Arc::downgrade(&self.0)));
        }
    }

    /// Starts the discovery task unless a primary is known or a task runs.
    fn discover(&self) {
        let mut start = false;
        self.0.known.send_if_modified(|named| {
            start = named.node.is_none() && !named.discovering;
            named.discovering |= start;
            false
        });
        if start {
            tokio::spawn(discover(Arc::downgrade(&self.0)));
        }
    }
}

/// Whether a failed attempt is a promotion under way rather than a failure to report: a
/// primary was known before (this is not a first discovery of a name the sentinels may not
/// know), and the sentinels name a node that does not say it is the primary yet
/// (`MasterNameNotFoundBySentinel`: redis-rs checks the node's `ROLE`). The call then waits
/// for the next attempt, within its own bound, instead of failing: writes no longer fail once
/// at a promotion for asking a moment too early.
fn promoting(generation: u64, error: &redis::RedisError) -> bool {
    generation > 0 && error.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel
}

/// The primaries the sentinels name, one after another.
pub(crate) struct Changes(watch::Receiver<Named>);

impl Changes {
    /// Waits until a newer primary is named: `false` once the cache is gone.
    pub(crate) async fn next(&mut self) -> bool {
        loop {
            if self.0.changed().await.is_err() {
                return false;
            }
            if self.0.borrow_and_update().node.is_some() {
                return true;
            }
        }
    }
}

impl Discovery {
    /// Numbers a new attempt, unless a primary is known.
    fn start_attempt(&self) -> Option<u64> {
        let mut attempt = None;
        self.known.send_if_modified(|named| {
            if named.node.is_none() {
                named.attempts += 1;
                attempt = Some(named.attempts);
            }
            false
        });
        attempt
    }

    /// Records why `attempt` failed, for the callers that waited for it.
    fn fail(&self, attempt: u64, error: RedisError) {
        tracing::debug!(%error, "no primary from the sentinels yet; retrying");
        self.known
            .send_modify(|named| named.failed = Some((attempt, error)));
    }

    /// Makes `node` the primary of a new generation in place of `replaced`'s, if that one is
    /// still the one named (nothing was lost or named meanwhile).
    fn replace(&self, replaced: u64, node: ConnectionInfo) {
        let moved = self.known.send_if_modified(|named| {
            if named.generation != replaced || named.node.is_none() {
                return false;
            }
            named.node = Some(node);
            named.generation += 1;
            true
        });
        if moved {
            tracing::info!("the sentinels name another primary; every connection follows it");
        }
    }

    /// Makes `node` the primary, as a new generation, and ends the discovery.
    fn publish(&self, node: ConnectionInfo) {
        tracing::debug!(primary = %node.addr(), "the sentinels named the primary");
        self.known.send_modify(|named| {
            named.node = Some(node);
            named.generation += 1;
            named.discovering = false;
        });
    }
}

/// Asks the sentinels until they name a primary (each attempt bounded), or until the cache is
/// dropped; then publishes it as a new generation.
async fn discover(discovery: Weak<Discovery>) {
    loop {
        let Some(inner) = discovery.upgrade() else {
            return;
        };
        let Some(attempt) = inner.start_attempt() else {
            return; // named meanwhile
        };
        let asked = tokio::time::timeout(DISCOVER_WITHIN, async {
            inner.sentinels.lock().await.async_get_client().await
        })
        .await;
        match asked {
            Ok(Ok(client)) => {
                inner.publish(client.get_connection_info().clone());
                return;
            }
            Ok(Err(error)) => inner.fail(attempt, error),
            Err(_) => {
                let late = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the sentinels named no primary within {DISCOVER_WITHIN:?}"),
                );
                inner.fail(attempt, late.into());
            }
        }
        drop(inner);
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// Asks the sentinels every [`CHECK_EVERY`], while a primary is known, whether it is still
/// theirs, and replaces it when they name another; ends with the cache.
async fn check(discovery: Weak<Discovery>) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let Some(inner) = discovery.upgrade() else {
            return;
        };
        let (generation, node) = {
            let named = inner.known.borrow();
            (named.generation, named.node.clone())
        };
        let Some(node) = node else {
            continue; // lost: the discovery task asks
        };
        let asked = tokio::time::timeout(DISCOVER_WITHIN, async {
            inner.sentinels.lock().await.async_get_client().await
        })
        .await;
        if let Ok(Ok(client)) = asked {
            let named = client.get_connection_info();
            if named.addr() != node.addr() {
                inner.replace(generation, named.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> Primary {
        let sentinels = SentinelClient::build(
            vec!["redis://127.0.0.1:1"],
            String::from("mymaster"),
            None,
            redis::sentinel::SentinelServerType::Master,
        )
        .unwrap();
        Primary::new(sentinels)
    }

    fn node(port: u16) -> ConnectionInfo {
        redis::IntoConnectionInfo::into_connection_info(format!("redis://127.0.0.1:{port}"))
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_primary_is_forgotten_once_for_every_connection() {
        let primary = unreachable();
        primary.0.publish(node(7000));
        let (generation, named) = primary.named().await.unwrap();
        assert_eq!(named.addr().to_string(), "127.0.0.1:7000");
        primary.lost(generation - 1);
        let again = primary.named().await.unwrap().0;
        assert_eq!(again, generation, "a stale report changes nothing");
        primary.lost(generation);
        let refused = primary.named().await;
        assert!(refused.is_err(), "a waiter learns why no primary is named");
        primary.lost(generation);
        primary.0.publish(node(7001));
        let (newer, named) = primary.named().await.unwrap();
        assert!(newer > generation + 1, "{newer} after {generation}");
        assert_eq!(named.addr().to_string(), "127.0.0.1:7001");
    }

    #[tokio::test(start_paused = true)]
    async fn discovery_runs_until_a_primary_is_named() {
        let primary = unreachable();
        let failed = primary.named().await;
        assert!(failed.is_err(), "the first attempt fails");
        let attempts = primary.0.known.borrow().attempts;
        assert!(
            primary.0.known.borrow().discovering,
            "and the task keeps asking"
        );
        primary.0.publish(node(7002));
        let (_, named) = primary.named().await.unwrap();
        assert_eq!(named.addr().to_string(), "127.0.0.1:7002");
        assert!(!primary.0.known.borrow().discovering);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = primary.0.known.borrow().attempts;
        assert!(
            after <= attempts + 1,
            "the task stops once a primary is named"
        );
    }
}
