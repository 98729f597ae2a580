//! The expiry table's variants: one hot key whose entries live one second, read by hand-written
//! cache-aside, the `cached` crate, and cached-redis without options, with `stale` and with
//! `refresh = "early"`.

use std::time::Duration;

use cached::AsyncRedisCache;
use cached::macros::concurrent_cached;
use cached_redis::redis_cached;

use super::{BenchError, Payload, URL, clients, load};

/// How long an entry lives: the expiry table's window.
pub(crate) const TTL: Duration = Duration::from_secs(1);

/// The expiry table's loader time.
pub(crate) const LOADER_MS: u64 = 20;

/// How the hot key is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    HandWritten,
    Cached,
    CachedRedis,
    Stale,
    Early,
}

impl Expiry {
    pub(crate) const ALL: [Expiry; 5] = [
        Expiry::HandWritten,
        Expiry::Cached,
        Expiry::CachedRedis,
        Expiry::Stale,
        Expiry::Early,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Expiry::HandWritten => "hand-written",
            Expiry::Cached => "cached",
            Expiry::CachedRedis => "cached-redis",
            Expiry::Stale => "cached-redis, stale = \"1s\"",
            Expiry::Early => "cached-redis, refresh = \"early\"",
        }
    }

    /// One read of `id`.
    pub(crate) async fn get(self, id: u64, size: usize) -> Result<Payload, BenchError> {
        match self {
            Expiry::HandWritten => hand_written(id, size).await,
            Expiry::Cached => cached_expiring(id, size).await,
            Expiry::CachedRedis => plain(id, size).await,
            Expiry::Stale => stale(id, size).await,
            Expiry::Early => early(id, size).await,
        }
    }
}

/// What the hand-written system does, with entries that expire.
async fn hand_written(id: u64, size: usize) -> Result<Payload, BenchError> {
    let key = format!("bench-exp-hw:{size}:{id}");
    super::hand_written(&key, TTL, load(id, size, LOADER_MS)).await
}

#[concurrent_cached(
    map_error = r##"|e| BenchError(format!("{e:?}"))"##,
    ty = "AsyncRedisCache<String, Payload>",
    create = r##"{
        AsyncRedisCache::builder("bench-exp-cached")
            .ttl(TTL)
            .connection_string(URL.get().expect("url"))
            .connection_manager(true)
            .build()
            .await
            .expect("cached's redis store")
    }"##,
    convert = r##"{ format!("{size}:{id}") }"##
)]
async fn cached_expiring(id: u64, size: usize) -> Result<Payload, BenchError> {
    load(id, size, LOADER_MS).await
}

#[redis_cached(key = "exp:<size>:<id>", ttl = "1s", cache = &clients().cache)]
async fn plain(id: u64, size: usize) -> Result<Payload, BenchError> {
    load(id, size, LOADER_MS).await
}

#[redis_cached(key = "exp-stale:<size>:<id>", ttl = "1s", stale = "1s", cache = &clients().cache)]
async fn stale(id: u64, size: usize) -> Result<Payload, BenchError> {
    load(id, size, LOADER_MS).await
}

#[redis_cached(key = "exp-early:<size>:<id>", ttl = "1s", refresh = "early", cache = &clients().cache)]
async fn early(id: u64, size: usize) -> Result<Payload, BenchError> {
    load(id, size, LOADER_MS).await
}
