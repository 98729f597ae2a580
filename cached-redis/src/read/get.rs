//! The GET that starts every call, and what it found: a value, nothing usable (no value, or
//! bytes that do not decode), or no answer from Redis.

use std::time::{Duration, Instant};

use crate::conn::command::keyed;
use crate::policy::{Due, Windows};
use crate::stats::Event;
use crate::stored::codec;
use crate::{Cache, CacheValue, Policy};

/// What the first GET found.
pub(super) enum Read<T> {
    /// A value, and when its entry expires (counted from before the GET was sent; for a
    /// policy with `stale`, the end of its TTL, not Redis's), if that was asked for.
    Hit(T, Option<Instant>),
    /// A value due for a refresh: drawn for an early refresh, past its TTL within `stale`, or
    /// past it within `fail_safe` only.
    Due(Refresh<T>),
    Missed(Missed),
}

/// A value due for a refresh, with the bytes it was read from (the lease script takes the
/// lease only while the entry still holds them).
pub(super) struct Refresh<T> {
    pub(super) value: T,
    pub(super) bytes: Vec<u8>,
    /// `Early`, `Stale` or `Expired`.
    pub(super) due: Due,
    /// Whether it is past its TTL by no more than `fail_safe`: it may answer for a failed
    /// load.
    pub(super) fail_safe: bool,
}

/// What a value says of its own windows: [`Cacheable::windows`](crate::Cacheable::windows).
pub(crate) type WindowsOf<T> = fn(&T) -> Option<Windows>;

/// Why a GET found no usable value.
pub(super) enum Missed {
    /// Redis answered with nothing usable: no value, or `corrupt` bytes that do not decode
    /// (the lease script replaces them only if they are still there).
    Absent { corrupt: Option<Vec<u8>> },
    /// Not read: the call starts with the lease script, which reads the entry
    /// ([`first_read`](super::first_read)); a hit or a miss is counted by its answer.
    Unread,
    /// Redis could not be asked.
    Unavailable,
}

impl Missed {
    /// The bytes found undecodable, if any: the lease script replaces them only if they are
    /// still there.
    pub(super) fn into_corrupt(self) -> Option<Vec<u8>> {
        match self {
            Missed::Absent { corrupt } => corrupt,
            Missed::Unread | Missed::Unavailable => None,
        }
    }
}

impl Cache {
    /// The first, uncoalesced GET; `near`: with the hit's expiry, from the entry's PTTL and
    /// the soft expiry stored in the entry, whichever comes first (an entry another function
    /// wrote may end sooner than this one's TTL, or carry no soft expiry).
    pub(super) async fn read<T: CacheValue>(
        &self,
        value_key: &str,
        policy: &Policy,
        near: bool,
        windows: WindowsOf<T>,
    ) -> Read<T> {
        let inner = &self.inner;
        let function = policy.name();
        let watches = policy.watches_expiry();
        // Read only when a near copy is kept by it: the clock is a tenth of a hit's own cost.
        let sent = near.then(Instant::now);
        let reply = if near {
            // Boxed: two commands' futures would double the size of every call's future,
            // which each call moves (a near hit and a refused read too).
            Box::pin(self.get_and_pttl(value_key)).await
        } else {
            let mut conn = inner.reads.clone();
            let get = keyed("GET", &[value_key]);
            let get = get.query_async::<Option<Vec<u8>>>(&mut conn);
            let reply = inner.guard.read(&inner.stats, "GET", get).await;
            reply.map(|bytes| (bytes, None))
        };
        // A PTTL of -1 (no expiry), -2 (gone since the GET) or refused: no expiry to keep a
        // copy by.
        let expires = |pttl: Option<i64>| {
            let ms = u64::try_from(pttl?).ok()?;
            Some(sent? + Duration::from_millis(ms))
        };
        match reply {
            Ok((None, _)) => Read::Missed(Missed::Absent { corrupt: None }),
            Ok((Some(bytes), pttl)) if watches => {
                self.hit_due(value_key, policy, bytes, (sent, expires(pttl), windows))
            }
            Ok((Some(bytes), pttl)) => match decode_hit(&bytes, sent, expires(pttl)) {
                Ok((value, until)) => Read::Hit(value, until),
                Err(e) => {
                    self.undecodable(value_key, function, &e);
                    Read::Missed(Missed::Absent {
                        corrupt: Some(bytes),
                    })
                }
            },
            Err(crate::Error::Redis(e)) if e.code() == Some("WRONGTYPE") => {
                inner.stats.note(Event::DecodeError, function);
                tracing::warn!(key = %value_key, "cache key holds a non-string value; replacing it");
                Read::Missed(Missed::Absent { corrupt: None })
            }
            Err(_) => Read::Missed(Missed::Unavailable),
        }
    }

    /// What a hit of a policy with `stale`, early refresh or `fail_safe` found: a value fresh
    /// until the end of its TTL, or one due for a refresh. The end of its TTL is the soft
    /// expiry stored in the entry, by the writer's clock against this process's (an entry
    /// written before soft expiries were stored ends its full `ttl` after its load). What it
    /// is due for follows the entry's own windows (`windows` of its value) where the policy
    /// takes them.
    /// `sent` and `expires`: when the read was sent and the expiry its `PTTL` gave, where a
    /// copy may be kept.
    pub(super) fn hit_due<T: CacheValue>(
        &self,
        value_key: &str,
        policy: &Policy,
        bytes: Vec<u8>,
        (sent, expires, windows): (Option<Instant>, Option<Instant>, WindowsOf<T>),
    ) -> Read<T> {
        let (value, origin, _) = match codec::decode_with_origin(&bytes) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.undecodable(value_key, policy.name(), &e);
                let corrupt = Some(bytes);
                return Read::Missed(Missed::Absent { corrupt });
            }
        };
        let policy = &policy.for_entry(windows(&value));
        // What Redis's PTTL would be, by the clocks.
        let left = origin.left_ms(policy);
        match policy.due(left, origin.load_ms()) {
            // Past its soft expiry with no window of its own left: kept by Redis for another
            // reader's windows, a miss for this one (the lease script replaces these bytes).
            Due::Fresh(_) if policy.judges_entries() && origin.fresh_ms() == Some(0) => {
                Read::Missed(Missed::Absent {
                    corrupt: Some(bytes),
                })
            }
            Due::Fresh(fresh) => {
                let fresh = sent.map(|sent| sent + fresh);
                Read::Hit(
                    value,
                    fresh.map(|fresh| expires.map_or(fresh, |e| e.min(fresh))),
                )
            }
            due => {
                let fail_safe = policy.within_fail_safe(left);
                Read::Due(Refresh {
                    value,
                    bytes,
                    due,
                    fail_safe,
                })
            }
        }
    }

    /// GET and PTTL, as two commands rather than a pipeline: a refused PTTL (an ACL without
    /// it) must not fail the GET, whose own error (`WRONGTYPE`) must keep its code. The
    /// multiplexed connection sends them back to back all the same. A failed PTTL reads as
    /// `None`: no expiry known, nothing kept near.
    async fn get_and_pttl(
        &self,
        value_key: &str,
    ) -> Result<(Option<Vec<u8>>, Option<i64>), crate::Error> {
        let inner = &self.inner;
        let (mut get_conn, mut pttl_conn) = (inner.reads.clone(), inner.reads.clone());
        let (get, pttl) = (keyed("GET", &[value_key]), keyed("PTTL", &[value_key]));
        let both = async {
            let get = get.query_async::<Option<Vec<u8>>>(&mut get_conn);
            let pttl = pttl.query_async::<i64>(&mut pttl_conn);
            let (bytes, pttl) = tokio::join!(get, pttl);
            bytes.map(|bytes| (bytes, pttl.ok()))
        };
        inner.guard.read(&inner.stats, "GET", both).await
    }

    /// Counts and logs a stored value that does not decode (it is then loaded again).
    pub(crate) fn undecodable(
        &self,
        value_key: &str,
        function: &'static str,
        error: &codec::CodecError,
    ) {
        self.inner.stats.note(Event::DecodeError, function);
        tracing::warn!(key = %value_key, %error, "cached value does not decode; reloading it");
    }
}

/// A hit's value and, where a copy of it may be kept (`sent`), until when: by the entry's
/// `PTTL` (`expires`), and no later than the end of the TTL the entry carries, which its
/// `PTTL` passes by what another function's `stale` or `fail_safe` keeps past it. Without a
/// copy to keep, only the value is read; so is an entry whose metadata does not read (a
/// plain read ignores it), of which no copy is kept.
fn decode_hit<T: CacheValue>(
    bytes: &[u8],
    sent: Option<Instant>,
    expires: Option<Instant>,
) -> Result<(T, Option<Instant>), codec::CodecError> {
    if sent.is_some()
        && let Ok((value, origin, _)) = codec::decode_with_origin(bytes)
    {
        return Ok((value, copy_expiry(expires, origin.fresh_ms(), sent)));
    }
    // Metadata this build does not read (or no copy to keep): the value is answered as a
    // plain read answers it, and no copy is kept.
    codec::decode(bytes).map(|value| (value, None))
}

/// Until when a copy of a hit may be kept: `expires` (by the entry's `PTTL`), and no later
/// than `fresh_ms` (what the entry's soft expiry leaves) from `sent`.
pub(super) fn copy_expiry(
    expires: Option<Instant>,
    fresh_ms: Option<u64>,
    sent: Option<Instant>,
) -> Option<Instant> {
    let fresh = fresh_ms
        .zip(sent)
        .map(|(ms, sent)| sent + Duration::from_millis(ms));
    match (expires, fresh) {
        (Some(expires), Some(fresh)) => Some(expires.min(fresh)),
        (expires, _) => expires,
    }
}
