//! The `#[redis_cached]` attribute. Depend on `cached-redis`, which re-exports it and holds the
//! runtime it expands to.

mod args;
mod duration;
mod errors;
mod expand;
mod format;
mod model;
mod template;
mod tokens;

use proc_macro::TokenStream;

/// Caches an `async fn` in Redis (cache-aside): a call reads the entry first, runs the function
/// on a miss and stores its result with a TTL. One load per cold key across every process that
/// shares the Redis (a lease; waiters are woken when the value is stored), errors never cached,
/// and the function still answering when Redis is down.
///
/// ```no_run
/// use cached_redis::{Cache, redis_cached};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct User {
///     id: u64,
///     name: String,
/// }
///
/// #[derive(Debug)]
/// struct DbError;
///
/// #[redis_cached(key = "user:<id>:v1", ttl = "60s", jitter = "10%")]
/// async fn get_user(id: u64) -> Result<User, DbError> {
///     Ok(User { id, name: "Ada".into() }) // your query
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cached_redis::Error> {
/// cached_redis::set_global(Cache::builder("redis://127.0.0.1:6379").build().await?);
/// let user = get_user(42).await; // a miss: loads, stores `cache:{user:42:v1}` for 54-60 s
/// // After a write to user 42:
/// if let Err(e) = invalidate_get_user(42).await {
///     eprintln!("user 42 may be stale until its TTL: {e}");
/// }
/// # Ok(()) }
/// ```
///
/// # Arguments
///
/// - `key = "user:<id>:v1"`: the entry's key. `<name>` is an argument (`<type>` for `r#type`),
///   `<user.id>` or `<pair.0>` a field of one, `<self.field>` a field of the receiver,
///   `<email.to_lowercase()>` a method call without arguments, `<day:display>` a value through
///   its `Display`, `<T>` a type parameter (rendered as `std::any::type_name` spells the type).
///   Two placeholders need a `:` between them;
///   values are escaped, so distinct arguments never share a key. Every argument of a type that
///   selects data must appear or be named in `skip`. Omitted: `<fn path>:<arg1>:<arg2>...`, the
///   path as the compiler names the function (module, impl type, generic arguments).
/// - `ttl = "60s"` (required): how long entries live (`ms`, `s`, `m`, `h`, `d`, combinable as
///   `"1h30m"`), or an expression of type `Duration` computed once, at the first call.
/// - `jitter = "10%"` or `"5s"`: entries live a TTL drawn from `[ttl - jitter, ttl]`.
/// - `lock_ttl = "5s"`: how long one loader may hold the entry's lease (default: the cache's).
/// - `max_load = "30s"`: how long one load may keep the lease before callers elsewhere load for
///   themselves (default: the cache's, three lease TTLs).
/// - `none_ttl = "5s"`: for `Option<T>` and `Result<Option<T>, E>` results, cache `None` this
///   long (default: not cached).
/// - `near = "5s"`: also keep decoded values in process memory this long (never past the
///   entry's Redis TTL), on a cache built with `.near_cache(entries)`; hits on them ask Redis
///   nothing, and Redis's invalidation messages drop them. Values must be `Clone` (`Arc<T>`
///   clones cheaply). Without `near`, a function on a cache built with `.near_by_default(d)`
///   keeps its values near for `d` if they are `Clone + Send + Sync + 'static`;
///   `near = "off"` keeps nothing even there.
/// - `stale = "5m"`: keep entries this long past their TTL; a call that finds one answers with
///   it at once while one caller (in any process) refreshes it under the lease, in the
///   background where the body borrows nothing from its caller (the body must then be
///   `Send`; `background = false` keeps it in the caller). An invalidated entry is removed
///   whole, never served stale.
/// - `refresh = "early"` (with `beta = 1.0`, optional): a hit refreshes its entry shortly
///   before it expires, by the XFetch rule on the recorded load time, so a steadily read key
///   does not expire in front of its callers.
/// - `fail_safe = "1h"` (functions returning `Result`): keep entries this long past their TTL;
///   when a load of an expired entry returns `Err`, answer with the entry instead, and do not
///   load the key again in this process for `back_off` (default 1s; at least 1ms, at most a
///   day; only with `fail_safe`).
/// - `codec = "msgpack"` or `"json"`: how this function's values are serialised (default: the
///   cache's, JSON unless set). Values in any codec are read.
/// - `compress_above = "16KiB"` (`B`, `KiB`, `MiB`) or `"never"`: zstd-compress values that
///   encode to more than this (default: the cache's; needs cached-redis's `zstd` feature).
/// - `cache = EXPR`: an expression yielding `&cached_redis::Cache`, evaluated per call (it may
///   use `self`); default: the cache installed by `cached_redis::set_global`.
/// - `cache_if = EXPR`: a predicate on the value (`&T` of a `Result<T, E>`): a value it rejects
///   is returned but not stored.
/// - `skip = "a, b"`: arguments that do not change the result, left out of the key.
/// - `helpers = false`: generate no helpers (a method of a trait impl).
///
/// # Return types
///
/// `Result<T, E>` (only `Ok` is cached; your `E` comes back untouched), `Option<T>` (`None` only
/// with `none_ttl`), `Result<Option<T>, E>` (`Ok(None)` like `None`) and any other `T`, through
/// aliases too. `T` must implement serde's `Serialize` and `Deserialize`; it is stored as JSON
/// unless `codec` (or the cache) says MessagePack.
///
/// # Generated beside the function
///
/// Same visibility; methods of the same `impl` (taking `&self`) for a method:
///
/// ```text
/// async fn invalidate_<fn>(<the arguments the key and `cache` use>) -> Result<bool, cached_redis::Error>
/// async fn update_<fn>(<the same>, change: impl FnMut(&mut T)) -> Result<bool, cached_redis::Error>
/// async fn refresh_<fn>(<every argument>) -> Result<<the return type>, cached_redis::Error>
/// async fn invalidate_all_<fn>(<the arguments `cache` uses>) -> Result<u64, cached_redis::Error>
/// fn <fn>_key(<the arguments the key uses>) -> cached_redis::Key
/// ```
///
/// `invalidate_<fn>` removes the entry and revokes a load in flight (`Err`: Redis could not be
/// told; the entry may live until its TTL). `update_<fn>` changes the cached `Ok`/`Some` value in
/// place by compare-and-set, never creating an entry. `refresh_<fn>` loads now and stores the
/// result (`Err` only with `invalidate_replicas`, when the replicas did not confirm the removal). `invalidate_all_<fn>` removes every entry of the function's template, for any
/// arguments, and no other template's. `<fn>_key` is the key, for `Cache::ttl` and the like.
///
/// Bad input is a compile error at the offending literal that says what to write instead. The
/// `cached-redis` crate's guide (`cached_redis::guide`) states every guarantee with the test that checks it.
#[proc_macro_attribute]
pub fn redis_cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::redis_cached(args.into(), item.into()).into()
}
