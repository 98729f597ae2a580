//! The `#[redis_cached]` attribute. Depend on `cached-redis`, which re-exports it and holds the
//! runtime it expands to.

mod args;
mod duration;
mod errors;
mod expand;
mod model;
mod template;

use proc_macro::TokenStream;

/// Caches an `async fn` in Redis (cache-aside), with one load per cold key across every
/// process sharing the Redis, errors never cached, and fall-back to the function when Redis is
/// down. Also generates `invalidate_<fn>(<the key's arguments>)` and `<fn>_key(<the key's
/// arguments>) -> cached_redis::Key` beside it.
///
/// Arguments:
/// - `key = "user:<id>:v1"`: the entry's key; `<name>` is an argument, `<user.id>` a field of
///   one, `<self.field>` a field of the receiver. Placeholders are separated by `:`. Omitted:
///   `<fn path>:<arg1>:<arg2>...`, the path as the compiler names the function.
/// - `ttl = "60s"` (required): how long entries live (`ms`, `s`, `m`, `h`, `d`, combinable as
///   `"1h30m"`).
/// - `jitter = "10%"` or `"5s"`: entries live a TTL drawn from `[ttl - jitter, ttl]`.
/// - `lock_ttl = "5s"`: how long one loader may hold the entry's lease (default: the cache's).
/// - `max_load = "30s"`: how long one load may keep the lease before callers elsewhere load for
///   themselves (default: the cache's, three lease TTLs).
/// - `none_ttl = "5s"`: for `Option` results, cache `None` this long (default: not cached).
/// - `cache = EXPR`: an expression yielding `&cached_redis::Cache`, evaluated per call (it may
///   use `self`); default: the cache installed by `cached_redis::set_global`.
///
/// See the `cached-redis` crate documentation for the guarantees and an example.
#[proc_macro_attribute]
pub fn redis_cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::redis_cached(args.into(), item.into()).into()
}
