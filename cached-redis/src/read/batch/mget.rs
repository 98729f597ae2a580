//! A batch's first read: one `MGET` for every id (on a cluster redis-rs splits it by slot and
//! sends the parts together), each entry judged as a single read's GET would judge it.

use futures_util::future::join_all;

use crate::read::get::{Missed, Read};
use crate::stored::codec;
use crate::{Cache, CacheValue, Policy};

impl Cache {
    /// What each of `value_keys` holds, in their order. A key is unavailable, as a single read
    /// would find it, while this process's write-back to it has no answer yet, or while an
    /// invalidation Redis did not take covers it; all are when the breaker is open or the
    /// `MGET` fails.
    pub(super) async fn read_many<T: CacheValue>(
        &self,
        value_keys: &[String],
        policy: &Policy,
    ) -> Vec<Read<T>> {
        let inner = &self.inner;
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
        let mut conn = inner.reads.clone();
        let mut mget = redis::cmd("MGET");
        mget.arg(value_keys);
        let mget = mget.query_async::<Vec<Option<Vec<u8>>>>(&mut conn);
        let found = match inner.guard.read(&inner.stats, "MGET", mget).await {
            Ok(found) if found.len() == value_keys.len() => found,
            _ => return value_keys.iter().map(|_| unavailable()).collect(),
        };
        let each = value_keys.iter().zip(answered).zip(found);
        each.map(|((key, answered), bytes)| {
            if !answered || inner.pending.covers(key) {
                unavailable()
            } else {
                self.judged(key, bytes, policy)
            }
        })
        .collect()
    }

    /// What one key's bytes read as: a hit, a value due for a refresh, or nothing usable
    /// (none, bytes that do not decode, or an entry past its TTL that a function with
    /// `stale` or `fail_safe` keeps: the lease script replaces them if they are still there).
    fn judged<T: CacheValue>(&self, key: &str, bytes: Option<Vec<u8>>, policy: &Policy) -> Read<T> {
        let Some(bytes) = bytes else {
            return Read::Missed(Missed::Absent { corrupt: None });
        };
        if policy.watches_expiry() {
            return self.hit_due(key, policy, bytes, None);
        }
        match codec::decode_with_origin(&bytes) {
            // Past its TTL, kept for another function's `stale` or `fail_safe`: not a hit for
            // this one. The lease script takes these bytes for none.
            Ok((_, origin, _)) if origin.fresh_ms() == Some(0) => Read::Missed(Missed::Absent {
                corrupt: Some(bytes),
            }),
            Ok((value, _, _)) => Read::Hit(value, None),
            Err(e) => {
                self.undecodable(key, policy.name(), &e);
                Read::Missed(Missed::Absent {
                    corrupt: Some(bytes),
                })
            }
        }
    }
}
