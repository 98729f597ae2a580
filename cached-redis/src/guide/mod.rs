//! The guide: everything the README leaves out, one page per subject.
//!
//! The README in the repository is the front door (what cached-redis is, the quickstart, an
//! axum + sqlx recipe, the cargo features and the service example). These pages hold the rest,
//! and every code block in them compiles as a doc test of this crate.
//!
//! - [`setup`]: building a cache, turning it off, and tests without Redis
//!   (`Cache::disabled`, `with_cache`, `override_global`).
//! - [`attribute`]: every argument of `#[redis_cached]`, keys, return types and compile errors.
//! - [`helpers`]: the functions the attribute generates (`invalidate_*`, `update_*`,
//!   `refresh_*`, `invalidate_all_*`, `*_key`) and what each guarantees.
//! - [`near`]: hits from process memory, kept coherent by Redis's invalidation messages.
//! - [`batch`]: many ids in one round trip, each missing id loaded once.
//! - [`codecs`]: JSON, MessagePack and zstd compression.
//! - [`keys`]: how entries, leases and wake-up channels are named in Redis.
//! - [`guarantees`]: each guarantee with the test that checks it, and every failure mode
//!   (outages, eviction, write pauses, replication and replica confirmations, persistence).
//! - [`cluster`] and [`sentinel`]: other deployments, and what their faults cost as measured.
//! - [`http`]: whole-response caching with `http::CacheLayer`, and its cache-tests results.
//! - [`without_attribute`]: `Cache::fetch` with a `Policy`.
//! - [`from_cached`]: porting from the `cached` crate.
//! - [`observability`]: `stats()`, tracing spans and metrics.
//! - [`performance`]: the benchmark against raw redis-rs, hand-written cache-aside and `cached`.
//!
//! ## Layout of the repository
//!
//! `cached-redis/` is the runtime (everything with behaviour, testable without the macro) and
//! re-exports the attribute; `cached-redis-macros/` parses, validates and expands the attribute;
//! `examples/` holds runnable programs; `tests/` holds the integration tests, the helper that runs
//! `redis-server` processes, and the trybuild compile tests (`tests/ui`); `bench/` is the
//! side-by-side benchmark, with its last full report in `bench/results/`.

#[doc = include_str!("setup.md")]
pub mod setup {}

#[doc = include_str!("attribute.md")]
pub mod attribute {}

#[doc = include_str!("helpers.md")]
pub mod helpers {}

#[doc = include_str!("near.md")]
pub mod near {}

#[doc = include_str!("batch.md")]
pub mod batch {}

#[doc = include_str!("codecs.md")]
pub mod codecs {}

#[doc = include_str!("keys.md")]
pub mod keys {}

#[doc = include_str!("guarantees.md")]
pub mod guarantees {}

#[doc = include_str!("cluster.md")]
pub mod cluster {}

#[doc = include_str!("sentinel.md")]
pub mod sentinel {}

#[doc = include_str!("http.md")]
pub mod http {}

#[doc = include_str!("without_attribute.md")]
pub mod without_attribute {}

#[doc = include_str!("from_cached.md")]
pub mod from_cached {}

#[doc = include_str!("observability.md")]
pub mod observability {}

#[doc = include_str!("performance.md")]
pub mod performance {}
