//! The writes the layer makes to Redis outside a load, each in a task of its own that
//! `Cache::settle` counts (the answer does not wait for Redis), and none on a cache in memory
//! or disabled, which keeps nothing past its freshness:
//!
//! - [`remove`]: an entry whose run answered with something not stored (a refresh whose answer
//!   is now a `404` or `private` ends the stale one);
//! - [`extend_record`]: a URL's `Vary` record lasts as long as its longest-lived variant. A
//!   variant stored with a longer life than the record has left (refreshed later, or with a
//!   longer window than the response that made the record) extends it; without that, the
//!   record would go first, and a request for the variant would run the handler at the URL's
//!   own key, where a `stale-if-error` answer cannot reach the variant.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::entry::HttpEntry;
use crate::conn::Conn;
use crate::conn::command::keyed;
use crate::lease::call::{Call, NUMBER};
use crate::lease::value_key;
use crate::{Cache, Key, Policy};

/// Replaces the record with `ARGV[1]` for `ARGV[2]` ms only while it exists (an invalidation
/// that removed it is not undone) and has less than that left.
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local left = redis.call('PTTL', KEYS[1])
if left < 0 or left >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
",
    )
});

/// Deletes the entries at `keys`, and no more: no load in flight is revoked (the requests that
/// waited for this run share its answer) and no other process is told. One Redis does not take
/// is logged, kept and replayed as an invalidation, and this process reads it from Redis no
/// more meanwhile.
pub(crate) fn remove(cache: &Cache, keys: Vec<String>) {
    for key in keys {
        let key = Key::raw(&key);
        let value_key = value_key(&cache.inner.namespace, &key).as_str().to_owned();
        let del = keyed("DEL", &[&value_key]);
        let write = move |mut conn: Conn| async move { del.query_async::<()>(&mut conn).await };
        spawn_write(cache, (value_key, Some(key)), "DEL", write);
    }
}

/// Extends the record at `base` (of `names`) to `lifetime`. A failure is logged: the record
/// then ends as it would have.
pub(crate) fn extend_record(
    cache: &Cache,
    policy: &Policy,
    base: &str,
    names: Vec<String>,
    lifetime: Duration,
) {
    if !in_redis(cache) {
        return;
    }
    let value_key = value_key(&cache.inner.namespace, &Key::raw(base));
    let value_key = value_key.as_str().to_owned();
    let ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
    let record = HttpEntry::Vary(names);
    let encoded = cache.encoded(&record, (Duration::ZERO, Some(ms)), policy, &value_key);
    let Some(bytes) = encoded else {
        return;
    };
    let mut call = Call::new(&EXTEND, &[&value_key], bytes.len() + NUMBER);
    call.arg(bytes).arg(ms);
    let write = move |mut conn: Conn| async move { call.invoke::<()>(&mut conn).await };
    spawn_write(cache, (value_key, None), "extend", write);
}

/// Runs `write` on the cache's writes connection, under its timeout and breaker, in a task
/// `Cache::settle` counts; logs its error, if any, and keeps it to replay as an invalidation
/// of `key` when there is one (a Redis key's `value_key`).
fn spawn_write<W, F>(
    cache: &Cache,
    (value_key, key): (String, Option<Key>),
    what: &'static str,
    write: W,
) where
    W: FnOnce(Conn) -> F + Send + 'static,
    F: Future<Output = redis::RedisResult<()>> + Send,
{
    if !in_redis(cache) {
        return;
    }
    let writing = cache.clone();
    let task = async move {
        let inner = &writing.inner;
        let written = write(inner.writes.clone());
        let Err(error) = inner.guard.write(&inner.stats, what, written).await else {
            return;
        };
        tracing::warn!(key = %value_key, %error, what, "a write of the HTTP layer's failed");
        if let Some(key) = key {
            writing.keep_failed(&error, |pending| pending.add_key(&value_key, &key));
        }
    };
    cache.inner.write_backs.spawn_refresh(task);
}

/// Whether `cache` keeps its entries in Redis (not in memory, not disabled).
fn in_redis(cache: &Cache) -> bool {
    !cache.inner.disabled && cache.inner.memory.is_none()
}
