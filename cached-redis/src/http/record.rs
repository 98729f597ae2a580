//! A URL's `Vary` record lasts as long as its longest-lived variant: a variant stored with a
//! longer life than the record has left (refreshed later, or with a longer window than the
//! response that made the record) extends it. Without that, the record would go first, and a
//! request for the variant would run the handler at the URL's own key, where a `stale-if-error`
//! answer cannot reach the variant.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::entry::HttpEntry;
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

/// Extends the record at `base` (of `names`) to `lifetime`, in a task of its own that
/// `Cache::settle` counts. A failure is logged: the record then ends as it would have.
pub(crate) fn extend(
    cache: &Cache,
    policy: &Policy,
    base: &str,
    names: Vec<String>,
    lifetime: Duration,
) {
    let inner = &cache.inner;
    if inner.disabled || inner.memory.is_some() {
        return;
    }
    let value_key = crate::lease::value_key(&inner.namespace, &Key::raw(base));
    let ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
    let record = HttpEntry::Vary(names);
    let Some(bytes) = cache.encoded(
        &record,
        (Duration::ZERO, Some(ms)),
        policy,
        value_key.as_str(),
    ) else {
        return;
    };
    let extending = cache.clone();
    let extension = async move {
        let inner = &extending.inner;
        let mut conn = inner.writes.clone();
        let mut call = EXTEND.key(value_key.as_str());
        call.arg(bytes).arg(ms);
        let extended = call.invoke_async::<i64>(&mut conn);
        if let Err(error) = inner.guard.write(&inner.stats, "extend", extended).await {
            tracing::warn!(key = %value_key.as_str(), %error, "could not extend a Vary record");
        }
    };
    cache.inner.write_backs.spawn_refresh(extension);
}
