#![doc = include_str!("../../README.md")]

mod breaker;
mod bulk;
mod cache;
mod cacheable;
mod codec;
mod conn;
mod error;
mod fetch;
mod flight;
mod global;
mod guard;
mod key;
mod lease;
mod policy;
mod random;
#[cfg(feature = "sentinel")]
mod sentinel;
mod stats;
mod wake;

#[doc(hidden)]
pub mod __private;

pub use cache::{Cache, CacheBuilder};
pub use cacheable::{CacheValue, Cacheable, Plain, Split};
pub use error::Error;
pub use global::{global, set_global};
pub use key::{Key, KeyBuilder, KeyPart, KeyWriter, MAX_KEY_LEN};
pub use policy::{Jitter, Policy};
pub use stats::Stats;

#[doc(inline)]
pub use cached_redis_macros::redis_cached;
