//! Updates of a cached value in place (`update_<fn>`, [`Cache::update`]): read the entry,
//! change it, write it back only if it is still what was read. An update never creates an
//! entry, keeps the entry's TTL, and never writes over an invalidation or a newer load.

use std::time::Duration;

use crate::conn::command::keyed;
use crate::lease::{self, EntryKeys};
use crate::stats::Event;
use crate::stored::codec::{self, Origin};
use crate::stored::format::Format;
use crate::{Cache, CacheValue, Error, Key, Policy};

/// Compare-and-set attempts before an update gives up on a contended entry (and removes it).
const ATTEMPTS: u32 = 8;

/// What one read-change-write round found.
pub(crate) enum Round {
    Updated,
    /// Another process's update came in between: read again.
    Conflict,
    /// The change cannot be applied to what is cached, and the entry must go.
    Remove,
    /// A load replaced the entry after the update first read it: it is newer than the change.
    Replaced,
}

impl Cache {
    /// Changes `key`'s cached value in place: reads it, applies `change`, and writes it back
    /// only if the entry still holds what was read (a compare-and-set in a script, tried again
    /// with `change` applied afresh when another process's update came in between). Returns
    /// `Ok(true)` if the cached value was changed.
    ///
    /// It never creates an entry, and keeps the entry's remaining TTL. `Ok(false)` means no
    /// cached value was changed, and none that misses the change is left: nothing was cached
    /// (any load in flight is revoked, as [`Cache::invalidate`] does), a load replaced the
    /// entry after the update read it (that value is newer), or the entry was removed because
    /// the change could not be applied (it does not decode; it holds what `V` cannot, such as
    /// a field a newer build added, which a rewrite would drop; or it stays contended). An `Err`
    /// means Redis did not take it: it is kept as an invalidation and replayed when Redis takes
    /// writes again (other processes may serve the entry without the change until then). `V` is
    /// the stored type: `T` for a `Result<T, E>` function, `Option<T>` for an `Option<T>` one.
    ///
    /// Set what your write committed rather than apply a delta (a load after the write
    /// already has it), and where writers race, keep the newer by a version (see [`crate::guide::helpers`]).
    ///
    /// ```no_run
    /// # async fn demo(cache: cached_redis::Cache) -> Result<(), cached_redis::Error> {
    /// let key = cached_redis::Key::builder().text("stock:").part(&42u64).build();
    /// let (committed, version) = (19_i64, 7_u64); // UPDATE ... RETURNING stock, version
    /// let changed = cache
    ///     .update(&key, |(stock, v): &mut (i64, u64)| {
    ///         if *v < version {
    ///             (*stock, *v) = (committed, version);
    ///         }
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn update<V: CacheValue>(
        &self,
        key: &Key,
        mut change: impl FnMut(&mut V),
    ) -> Result<bool, Error> {
        let change = |value: &mut V| {
            change(value);
            true
        };
        self.update_with(key, None, change).await
    }

    /// [`Cache::update`] with a `change` that returns whether it applies to the value (a
    /// cached `None` has nothing to change: it is removed), written in the format of
    /// `policy`'s codec and compression (the function's, for `update_<fn>`), or without one
    /// in the format the entry was found in.
    pub(crate) async fn update_with<V: CacheValue>(
        &self,
        key: &Key,
        policy: Option<&Policy>,
        change: impl FnMut(&mut V) -> bool,
    ) -> Result<bool, Error> {
        if self.inner.disabled {
            return Ok(false);
        }
        let keys = EntryKeys::new(&self.inner.namespace, key);
        let bound = self.inner.guard.op_timeout();
        let _turn = self.inner.updates.turn(&keys.value, bound).await;
        if let Some(memory) = &self.inner.memory {
            let format = policy.map(|p| p.format(self.inner.format));
            return Ok(self.update_in_memory(memory, &keys.value, format, change));
        }
        // An invalidation Redis did not take goes first: an update of the stale entry would
        // keep it. Once it is taken there is no entry to update.
        if self.inner.pending.covers(&keys.value) {
            self.invalidate(key).await?;
        }
        // A load's write-back from an earlier call here: the update applies to its value.
        // Bounded like the write-back itself; the update's own rounds are bounded again.
        self.inner.write_backs.answered(&keys.value, bound).await;
        let updated = self.update_rounds(key, &keys, policy, change).await;
        if let Err(error) = &updated {
            // The data changed and the entry may not have: it goes once Redis answers (kept
            // before the copy goes, as `invalidate` does).
            self.keep_failed(error, |pending| pending.add_key(&keys.value, key));
        }
        // After Redis's reply: this process's copy goes before the update returns.
        self.forget_near(key);
        updated
    }

    /// The rounds of an update, in its turn.
    async fn update_rounds<V: CacheValue>(
        &self,
        key: &Key,
        keys: &EntryKeys,
        policy: Option<&Policy>,
        mut change: impl FnMut(&mut V) -> bool,
    ) -> Result<bool, Error> {
        let format = policy.map(|p| p.format(self.inner.format));
        let mut origin = None;
        for attempt in 0..ATTEMPTS {
            let round = match self.round(keys, &mut origin, format, &mut change).await {
                // Refused writes (OOM under `noeviction`, say) still allow a `DEL`: remove
                // the entry rather than leave it missing the change.
                Err(error) if crate::conn::guard::refuses_writes(&error) => Round::Remove,
                round => round?,
            };
            match round {
                Round::Updated => return Ok(true),
                Round::Replaced => return Ok(false),
                Round::Remove => return self.invalidate(key).await.map(|_| false),
                Round::Conflict => back_off(attempt).await,
            }
        }
        tracing::warn!(key = %keys.value, "update still contended after {ATTEMPTS} tries; entry removed");
        self.invalidate(key).await.map(|_| false)
    }

    /// Reads the entry, applies `change` and writes it back if nothing came in between.
    /// `origin` is the load the first round found the entry from.
    async fn round<V: CacheValue>(
        &self,
        keys: &EntryKeys,
        origin: &mut Option<Origin>,
        format: Option<Format>,
        change: &mut impl FnMut(&mut V) -> bool,
    ) -> Result<Round, Error> {
        let Some(read) = self.read_for_update(keys, origin.is_none()).await? else {
            // Nothing cached; a load in flight may have read the data before the change.
            return Ok(Round::Remove);
        };
        let replacement = match self.rewrite(&keys.value, &read, origin, format, change) {
            Ok(replacement) => replacement,
            Err(round) => return Ok(round),
        };
        let replaced = self.compare_and_set(keys, &read, &replacement).await?;
        Ok(if replaced {
            Round::Updated
        } else {
            Round::Conflict
        })
    }

    /// What an update makes of the entry's bytes `read`: the bytes to write in their place,
    /// or how the round ends without writing (the entry replaced by a newer load since the
    /// first round, or to be removed: undecodable, holding what this build cannot keep, a
    /// cached `None`, a change that does not apply).
    pub(crate) fn rewrite<V: CacheValue>(
        &self,
        value_key: &str,
        read: &[u8],
        origin: &mut Option<Origin>,
        format: Option<Format>,
        change: &mut impl FnMut(&mut V) -> bool,
    ) -> Result<Vec<u8>, Round> {
        let (mut value, found, found_format) = match codec::decode_with_origin::<V>(read) {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::warn!(key = %value_key, %error, "cached value does not decode; removing it instead of updating it");
                self.inner.stats.note(Event::DecodeError, "update");
                return Err(Round::Remove);
            }
        };
        if *origin.get_or_insert(found) != found {
            return Err(Round::Replaced);
        }
        if !codec::reads_whole(read, &value) {
            tracing::warn!(key = %value_key, "cached value holds what this build's type cannot (a field added by a newer build?); removing it instead of rewriting it without");
            self.inner.stats.note(Event::DecodeError, "update");
            return Err(Round::Remove);
        }
        // A cached `None` (an `Option`'s, a `Result<Option<T>, E>`'s `Ok(None)`) has nothing
        // to change and may be stale after the write; a change that leaves `None` would store
        // one for the entry's full TTL, whatever the function's `none_ttl`.
        if !is_value(&value) || !change(&mut value) || !is_value(&value) {
            return Err(Round::Remove);
        }
        let format = format.unwrap_or(found_format);
        codec::encode_from(&value, found, format).map_err(|error| {
            tracing::warn!(key = %value_key, %error, "updated value does not encode; removing the entry");
            Round::Remove
        })
    }

    /// The entry's bytes, from the primary (over the write connection, as the update's write
    /// follows); in the `first` round, with the entry's lease revoked
    /// ([`lease::read_revoking`]): a load that replaces the entry after that started after the
    /// update, and is newer than its change.
    async fn read_for_update(
        &self,
        keys: &EntryKeys,
        first: bool,
    ) -> Result<Option<Vec<u8>>, Error> {
        let inner = &self.inner;
        let mut conn = inner.writes.clone();
        if first {
            let read = lease::read_revoking(&mut conn, keys);
            return inner.guard.write(&inner.stats, "update", read).await;
        }
        let get = keyed("GET", &[&keys.value]);
        let read = get.query_async::<Option<Vec<u8>>>(&mut conn);
        inner.guard.write(&inner.stats, "update", read).await
    }

    async fn compare_and_set(
        &self,
        keys: &EntryKeys,
        read: &[u8],
        replacement: &[u8],
    ) -> Result<bool, Error> {
        let inner = &self.inner;
        match &inner.replicated {
            None => {
                let mut conn = inner.writes.clone();
                let op = lease::compare_and_set(&mut conn, keys, read, replacement);
                inner.guard.write(&inner.stats, "update", op).await
            }
            Some(replicated) => {
                replicated
                    .compare_and_set(inner.report(), keys, read, replacement)
                    .await
            }
        }
    }
}

/// Whether a value is one an update may keep: not a `None` or `Some(None)`.
fn is_value<V: CacheValue>(value: &V) -> bool {
    matches!(
        crate::stored::none_probe::shape(value),
        crate::stored::none_probe::Shape::Value
    )
}

/// A short random pause before the next round, longer after each conflict.
async fn back_off(attempt: u32) {
    let bound = 1_000u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_micros(crate::random::below(bound))).await;
}
