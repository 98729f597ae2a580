//! Removing entries: one ([`Cache::invalidate`]) or many ([`Cache::invalidate_many`]), every one of the namespace
//! ([`Cache::clear`]), of a prefix ([`Cache::invalidate_prefix`]) or of a template
//! ([`Cache::invalidate_family`]); each revokes the loads in flight it would make stale.

use crate::key::pattern::{glob_escape, prefix_patterns};
use crate::lease::{self, EntryKeys};
use crate::write::bulk::remove_matching;
use crate::write::pending::Removal;
use crate::{Cache, Error, Key, KeyFamily};

impl Cache {
    /// Removes `key`'s entry and revokes any load in flight for it, so that the load's result
    /// is not stored. Returns whether an entry was removed.
    ///
    /// Call it after every write to the data behind the entry. An `Err` means Redis could not be
    /// told. The invalidation is then kept and replayed as soon as Redis answers again, and
    /// until then this process does not read the entry from Redis (it loads it, storing
    /// nothing); other processes may serve it until the replay.
    ///
    /// ```no_run
    /// # async fn demo(cache: cached_redis::Cache) -> Result<(), cached_redis::Error> {
    /// let key = cached_redis::Key::builder().text("user:").part(&42u64).text(":v1").build();
    /// let removed: bool = cache.invalidate(&key).await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate(&self, key: &Key) -> Result<bool, Error> {
        let inner = &self.inner;
        if inner.disabled {
            return Ok(false);
        }
        let keys = EntryKeys::new(&inner.namespace, key);
        if let Some(memory) = &inner.memory {
            return Ok(memory.invalidate(&keys.value));
        }
        let sent = inner.pending.now();
        let publish = inner.writes.publish_command();
        let removed = match &inner.replicated {
            None => {
                let mut conn = inner.writes.clone();
                let op = lease::invalidate(&mut conn, &keys, publish);
                inner.guard.write(&inner.stats, "invalidate", op).await
            }
            Some(replicated) => replicated.invalidate(inner.report(), &keys).await,
        };
        // A refusal is kept first: a read that misses the near copy after it is dropped below
        // then finds the key covered, and one that started before keeps nothing.
        if let Err(error) = &removed {
            self.keep_failed(error, |pending| pending.add_key(&keys.value, key));
        }
        // After Redis's reply, which comes before its invalidation message to this process:
        // a read here that started before the removal keeps nothing (whatever the reply).
        self.forget_near(key);
        if removed.is_ok() {
            inner.pending.key_done(&keys.value, sent);
        }
        let removed = removed?;
        tracing::debug!(key = %keys.value, removed, "invalidated");
        Ok(removed)
    }

    /// Removes the entries of every key in `keys`, as [`Cache::invalidate`] removes one (the
    /// invalidations are sent together), and returns how many were removed. Every key is
    /// tried; if Redis could not be told of some, the first such error is returned, and
    /// those invalidations are kept and replayed as for a single key.
    ///
    /// ```no_run
    /// # async fn demo(cache: cached_redis::Cache) -> Result<(), cached_redis::Error> {
    /// let key_of = |id: u64| cached_redis::Key::builder().text("user:").part(&id).build();
    /// let removed: u64 = cache.invalidate_many([7, 8, 9].map(key_of)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_many(&self, keys: impl IntoIterator<Item = Key>) -> Result<u64, Error> {
        let keys: Vec<Key> = keys.into_iter().collect();
        let each = keys.iter().map(|key| self.invalidate(key));
        let mut removed = 0;
        let mut failed = None;
        for outcome in futures_util::future::join_all(each).await {
            match outcome {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(error) => {
                    failed.get_or_insert(error);
                }
            }
        }
        failed.map_or(Ok(removed), Err)
    }

    /// Removes every entry and lease of this cache's namespace, waking any waiters, and returns
    /// how many keys were removed. It walks the namespace with `SCAN` in batches of 500 (never
    /// `KEYS`, which would block Redis) and deletes each batch with `UNLINK`.
    ///
    /// ```no_run
    /// # async fn demo(cache: cached_redis::Cache) -> Result<(), cached_redis::Error> {
    /// let removed = cache.clear().await?;
    /// # Ok(()) }
    /// ```
    pub async fn clear(&self) -> Result<u64, Error> {
        if let Some(memory) = &self.inner.memory {
            return Ok(memory.clear());
        }
        self.remove_or_keep(Removal::All).await
    }

    /// Removes every entry whose key starts with `prefix` (as rendered, e.g. `"user:"` for all
    /// entries of `key = "user:<id>:v1"` and of any other template starting so), with their
    /// leases, and returns how many keys were removed. Like [`Cache::clear`], it scans in
    /// bounded batches, on every primary of a cluster.
    ///
    /// ```no_run
    /// # async fn demo(cache: cached_redis::Cache) -> Result<(), cached_redis::Error> {
    /// let removed = cache.invalidate_prefix("user:").await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, Error> {
        if let Some(memory) = &self.inner.memory {
            let start = format!("{}:{{", self.inner.namespace);
            // As the patterns match: a shortened key by its readable part, too.
            let shortened =
                crate::key::readable_part_of_long_prefix(prefix).map(|r| format!("{r}\\#"));
            let matches = |key: &str| {
                key.strip_prefix(&start).is_some_and(|rendered| {
                    rendered.starts_with(prefix)
                        || shortened
                            .as_deref()
                            .is_some_and(|s| rendered.starts_with(s))
                })
            };
            return Ok(self.remove_in_memory(memory, matches));
        }
        self.remove_or_keep(Removal::Prefix(prefix.to_owned()))
            .await
    }

    /// Removes every entry `family`'s template renders (whatever its arguments) and revokes
    /// loads of them in flight, as [`Cache::invalidate_prefix`] does, but only that
    /// template's: `user:<id>:v1` leaves `user:<id>:v2` and `user:<id>:v1:<page>` alone.
    /// Keys are found with `SCAN` over the template's fixed start, then matched one by one.
    /// Returns how many Redis keys (entries and leases) were removed. The attribute
    /// generates `invalidate_all_<fn>()` around it.
    ///
    /// ```no_run
    /// # async fn demo(cache: cached_redis::Cache) -> Result<(), cached_redis::Error> {
    /// use cached_redis::KeyFamily;
    ///
    /// let pages = KeyFamily::builder().text("products:page:").part().build();
    /// let removed = cache.invalidate_family(&pages).await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_family(&self, family: &KeyFamily) -> Result<u64, Error> {
        if let Some(memory) = &self.inner.memory {
            let start = format!("{}:{{", self.inner.namespace);
            let keep = |key: &str| of_family(key, &start, family);
            return Ok(self.remove_in_memory(memory, keep));
        }
        self.remove_or_keep(Removal::Family(family.clone())).await
    }

    /// A removal of many entries from Redis, kept for replay if Redis does not take it.
    async fn remove_or_keep(&self, removal: Removal) -> Result<u64, Error> {
        let removed = self.remove(&removal).await;
        if let Err(error) = &removed {
            self.keep_failed(error, |pending| pending.add_removal(removal));
            // Again, now that it is kept: a read that took its near ticket after the flush in
            // `remove` and before the keeping, and found nothing covered, keeps nothing.
            if let Some(near) = &self.inner.near {
                near.flush();
            }
        }
        removed
    }

    /// A removal of many entries from Redis (and this process's near copies).
    pub(crate) async fn remove(&self, removal: &Removal) -> Result<u64, Error> {
        let namespace = &self.inner.namespace;
        match removal {
            Removal::All => {
                let pattern = format!("{}:{{*", glob_escape(namespace));
                remove_matching(&self.inner, &[pattern], &|_| true).await
            }
            Removal::Prefix(prefix) => {
                let patterns = prefix_patterns(namespace, prefix);
                remove_matching(&self.inner, &patterns, &|_| true).await
            }
            Removal::Family(family) => {
                let start = format!("{namespace}:{{");
                let patterns = prefix_patterns(namespace, &family.fixed_start());
                let keep = |key: &str| of_family(key, &start, family);
                remove_matching(&self.inner, &patterns, &keep).await
            }
        }
    }
}

/// Whether the Redis key `key` (a value or its lease; `start` is `<namespace>:{`) is an entry
/// of `family`.
fn of_family(key: &str, start: &str, family: &KeyFamily) -> bool {
    let Some(inside) = key.strip_prefix(start) else {
        return false;
    };
    let rendered = inside
        .strip_suffix("}:lease")
        .or_else(|| inside.strip_suffix('}'));
    rendered.is_some_and(|r| family.matches_rendered(r))
}
