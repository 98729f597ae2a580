//! Redis cache-aside for async Rust functions, correct by default.
//!
//! One attribute, [`redis_cached`], gives a function a read through Redis: one load per cold
//! key across every process that shares the Redis (a lease, with waiters woken when it is
//! stored), errors never cached, no stale value stored after a racing write, the loader still
//! answering when Redis is down (fail-open, with a circuit breaker), and a generated
//! `invalidate_<fn>` for the write paths.
//!
//! ```no_run
//! use cached_redis::{Cache, redis_cached};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct User {
//!     id: u64,
//!     name: String,
//! }
//!
//! #[derive(Debug)]
//! struct DbError;
//!
//! #[redis_cached(key = "user:<id>:v1", ttl = "60s", jitter = "10%")]
//! async fn get_user(id: u64) -> Result<User, DbError> {
//!     Ok(User { id, name: "Ada".into() }) // your query
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! cached_redis::set_global(Cache::builder("redis://127.0.0.1:6379").build().await?);
//! let user = get_user(42).await; // a miss: loads and stores `cache:{user:42:v1}`
//! invalidate_get_user(42).await?; // generated: call it on every write path
//! # Ok(()) }
//! ```
//!
//! - [`Cache`] is the handle (one Redis, [`Cache::cluster_builder`], or
//!   `Cache::sentinel_builder` with the `sentinel` feature); [`Cache::fetch`] is the same engine
//!   without the attribute.
//! - [`Key`] and [`KeyPart`] render keys (escaped and injective); [`Policy`] holds a function's
//!   TTL, jitter and lease settings; [`Stats`] counts what happened; [`Error`] is what a cache
//!   operation can fail with (a cached function returns your own error type untouched).
//! - Features: `tls` (`rediss://`), `metrics` (the `metrics` facade), `sentinel`, `uuid`,
//!   `chrono`, `time` (those crates' ids and dates as key parts), `zstd` ([`Compression::Zstd`])
//!   and `http` (`http::CacheLayer`, whole-response caching for tower and axum services).
//! - [`Codec`] and [`Compression`]: how values are written (JSON by default, or MessagePack;
//!   zstd above a size), on the cache or per function; every format is read whatever is set.
//! - Beside `invalidate_<fn>`, the attribute generates `update_<fn>` (changes the cached value
//!   in place, by compare-and-set; [`Cache::update`] without the attribute), `refresh_<fn>`
//!   (loads now and stores the result), `invalidate_all_<fn>` (every entry of the function's
//!   template; [`Cache::invalidate_family`] with a [`KeyFamily`] without the attribute) and
//!   `<fn>_key`.
//!
//! The [`guide`] states every guarantee with the test that checks it, what each failure (Redis
//! down, refusing writes, a cluster failover) costs, and the benchmarks; the README in the
//! repository is its front door.

// The README's examples compile as doc tests too.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

mod builder;
mod cache;
mod conn;
mod error;
mod global;
pub mod guide;
#[cfg(feature = "http")]
pub mod http;
mod key;
mod keyed;
mod lease;
mod local;
mod memory;
mod policy;
mod random;
mod rate_limit;
mod read;
mod stats;
mod stored;
mod write;

#[doc(hidden)]
pub mod __private;

pub use builder::CacheBuilder;
pub use cache::Cache;
pub use error::Error;
pub use global::{GlobalOverride, global, override_global, set_global, take_global, with_cache};
pub use key::family::{KeyFamily, KeyFamilyBuilder};
pub use key::{Key, KeyBuilder, KeyPart, KeyWriter, MAX_KEY_LEN};
pub use policy::{Jitter, Policy};
pub use stats::Stats;
pub use stored::cacheable::{CacheValue, Cacheable, Plain, Split};
pub use stored::format::{Codec, Compression};

#[doc(inline)]
pub use cached_redis_macros::redis_cached;
