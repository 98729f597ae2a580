//! A batch's first read: one `MGET` for every id (on a cluster redis-rs splits it by slot and
//! sends the parts together), each entry judged as a single read's GET would judge it.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::conn::command::keyed;
use crate::read::get::{Missed, Read, copy_expiry};
use crate::stored::codec;
use crate::{Cache, CacheValue, Policy};

impl Cache {
    /// What each of `value_keys` holds, in their order. A key is unavailable, as a single read
    /// would find it, while this process's write-back to it has no answer yet, or while an
    /// invalidation Redis did not take covers it; all are when the breaker is open or the
    /// `MGET` fails.
    ///
    /// With `expiry` (near copies may be kept of the hits), each hit comes with when its entry
    /// expires, counted from before the read was sent: from its `PTTL`, sent beside the `MGET`
    /// in the same round trip (a refused `PTTL` keeps nothing), or, for a policy that watches
    /// expiry, from the soft expiry stored in the entry.
    pub(super) async fn read_many<T: CacheValue>(
        &self,
        value_keys: &[String],
        policy: &Policy,
        expiry: bool,
    ) -> Vec<Read<T>> {
        let inner = &self.inner;
        if value_keys.is_empty() {
            // Every id had a near copy: nothing to ask (an `MGET` of no key is an error).
            return Vec::new();
        }
        let bound = inner.guard.op_timeout();
        // Each key's wait for this process's write-back to it, if any runs (none: no wait).
        let answered = match inner.write_backs.len() {
            0 => vec![true; value_keys.len()],
            _ => {
                let each = value_keys.iter();
                join_all(each.map(|key| inner.write_backs.answered(key, bound))).await
            }
        };
        let unavailable = || Read::Missed(Missed::Unavailable);
        if inner.guard.is_open() {
            return value_keys.iter().map(|_| unavailable()).collect();
        }
        let sent = expiry.then(Instant::now);
        let replies = Box::pin(self.mget(value_keys, expiry)).await;
        let (found, pttls) = match replies {
            Ok((found, pttls)) if found.len() == value_keys.len() => (found, pttls),
            _ => return value_keys.iter().map(|_| unavailable()).collect(),
        };
        let each = value_keys.iter().zip(answered).zip(found).enumerate();
        each.map(|(i, ((key, answered), bytes))| {
            if !answered || inner.pending.covers(key) {
                return unavailable();
            }
            let expires = match &pttls {
                Some(pttls) => pttl_expiry(sent, pttls.get(i)),
                None => None,
            };
            self.judged(key, bytes, policy, (sent, expires))
        })
        .collect()
    }

    /// The `MGET` and, with `with_pttl`, a `PTTL` of each key sent beside it (the multiplexed
    /// connection writes them together), bounded as one read: a refused `PTTL` (an ACL
    /// without it) reads as `None` and does not fail the `MGET`.
    async fn mget(
        &self,
        value_keys: &[String],
        with_pttl: bool,
    ) -> Result<(Vec<Option<Vec<u8>>>, Option<Vec<Option<i64>>>), crate::Error> {
        let inner = &self.inner;
        let mut conn = inner.reads.clone();
        let mget = keyed("MGET", value_keys);
        let both = async {
            let mget = mget.query_async::<Vec<Option<Vec<u8>>>>(&mut conn);
            if !with_pttl {
                return mget.await.map(|found| (found, None));
            }
            let pttls = value_keys.iter().map(|key| {
                let mut conn = inner.reads.clone();
                let pttl = keyed("PTTL", &[key]);
                async move { pttl.query_async::<i64>(&mut conn).await.ok() }
            });
            let (found, pttls) = tokio::join!(mget, join_all(pttls));
            found.map(|found| (found, Some(pttls)))
        };
        inner.guard.read(&inner.stats, "MGET", both).await
    }

    /// What one key's bytes read as: a hit, a value due for a refresh, or nothing usable
    /// (none, bytes that do not decode, or an entry past its TTL that a function with
    /// `stale` or `fail_safe` keeps: the lease script replaces them if they are still there).
    /// `sent`: when the read was sent, if a hit's expiry is wanted; `expires`: the expiry its
    /// `PTTL` gave.
    fn judged<T: CacheValue>(
        &self,
        key: &str,
        bytes: Option<Vec<u8>>,
        policy: &Policy,
        (sent, expires): (Option<Instant>, Option<Instant>),
    ) -> Read<T> {
        let Some(bytes) = bytes else {
            return Read::Missed(Missed::Absent { corrupt: None });
        };
        if policy.watches_expiry() {
            // A batch's values say no windows of their own (HTTP responses are not read in batches).
            return self.hit_due(key, policy, bytes, (sent, expires, |_| None));
        }
        match codec::decode_with_origin(&bytes) {
            // Past its TTL, kept for another function's `stale` or `fail_safe`: not a hit for
            // this one. The lease script takes these bytes for none.
            Ok((_, origin, _)) if origin.fresh_ms() == Some(0) => Read::Missed(Missed::Absent {
                corrupt: Some(bytes),
            }),
            // A copy is kept no longer than the entry is fresh: its PTTL also counts what
            // another function's `stale` or `fail_safe` keeps past the TTL.
            Ok((value, origin, _)) => {
                Read::Hit(value, copy_expiry(expires, origin.fresh_ms(), sent))
            }
            Err(e) => {
                self.undecodable(key, policy.name(), &e);
                Read::Missed(Missed::Absent {
                    corrupt: Some(bytes),
                })
            }
        }
    }
}

/// When an entry whose `PTTL` was `pttl` expires, counted from `sent`: none for no expiry
/// (-1), a key gone since the `MGET` (-2) or a refused `PTTL`.
fn pttl_expiry(sent: Option<Instant>, pttl: Option<&Option<i64>>) -> Option<Instant> {
    let ms = u64::try_from((*pttl?)?).ok()?;
    Some(sent? + Duration::from_millis(ms))
}
