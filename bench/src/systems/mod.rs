//! The systems under test, each reading the same value shape through Redis (the near cache's
//! system and oxcache answer most reads from process memory; oxcache is in the near-cache
//! tables only).

pub(crate) mod expiry;
mod near;
mod ox;

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cached::AsyncRedisCache;
use cached::macros::concurrent_cached;
use cached_redis::{Cache, redis_cached};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

/// The cached value: an id, a name, tags and a body padded to the scenario's size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Payload {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) tags: Vec<String>,
    pub(crate) body: String,
}

/// Builds a payload whose JSON is about `size` bytes.
pub(crate) fn payload(id: u64, size: usize) -> Payload {
    let mut p = Payload {
        id,
        name: format!("product {id}"),
        tags: vec!["bench".into(), "redis".into(), "cache".into()],
        body: String::new(),
    };
    let base = serde_json::to_vec(&p).map_or(0, |v| v.len());
    p.body = "x".repeat(size.saturating_sub(base));
    p
}

#[derive(Debug, Clone)]
pub(crate) struct BenchError(pub(crate) String);

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Loader invocations across all systems in this process.
pub(crate) static LOADS: AtomicU64 = AtomicU64::new(0);

pub(crate) use near::{NearCache, make_near, near_get, near_owned_get, near_stats};
pub(crate) use ox::{OxCache, ox_l1_misses, oxcache_get};

async fn load(id: u64, size: usize, delay_ms: u64) -> Result<Payload, BenchError> {
    LOADS.fetch_add(1, Ordering::Relaxed);
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    Ok(payload(id, size))
}

/// The systems, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum System {
    Raw,
    HandWritten,
    Cached,
    CachedRedis,
    /// cached-redis with `near = "5s"` on a cache with a near cache (see [`near`]).
    CachedRedisNear,
    /// oxcache, a moka L1 in front of Redis (see [`ox`]): the near-cache tables only.
    Oxcache,
}

impl System {
    /// The systems of every scenario but the near cache's, in table order.
    pub(crate) const ALL: [System; 5] = [
        System::Raw,
        System::HandWritten,
        System::Cached,
        System::CachedRedis,
        System::CachedRedisNear,
    ];
    /// The near-cache tables' systems: [`System::ALL`] and oxcache.
    pub(crate) const NEAR: [System; 6] = [
        System::Raw,
        System::HandWritten,
        System::Cached,
        System::CachedRedis,
        System::CachedRedisNear,
        System::Oxcache,
    ];
    /// How many systems there are (every one is in [`System::NEAR`]).
    pub(crate) const COUNT: usize = System::NEAR.len();
    /// The systems that load on a miss (raw only reads). The near system is left out: a miss,
    /// a stampede and a Redis that is down take cached-redis's own path with it, the near
    /// cache holding nothing yet.
    pub(crate) const LOADING: [System; 3] =
        [System::HandWritten, System::Cached, System::CachedRedis];

    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Raw => "raw",
            System::HandWritten => "hand-written",
            System::Cached => "cached",
            System::CachedRedis => "cached-redis",
            System::CachedRedisNear => "cached-redis near",
            System::Oxcache => "oxcache (moka L1 + Redis)",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<System> {
        System::NEAR.into_iter().find(|s| s.name() == name)
    }
}

/// Connections shared by every call in this process.
pub(crate) struct Clients {
    conn: ConnectionManager,
    pub(crate) cache: Cache,
    /// The near system's cache, if this process has one.
    near: Option<Cache>,
    /// oxcache's, in the process that runs the near-cache tables (`NearCache::On`).
    oxcache: Option<OxCache>,
}

static URL: OnceLock<String> = OnceLock::new();
static CLIENTS: OnceLock<Clients> = OnceLock::new();

/// Connects every system to `url` (once per process), the near system with `near`, and
/// oxcache if `near` is [`NearCache::On`].
pub(crate) async fn connect(url: &str, near: NearCache) -> &'static Clients {
    URL.set(url.to_owned()).expect("connect once");
    let client = redis::Client::open(url).expect("valid url");
    let conn = ConnectionManager::new_lazy_with_config(
        client,
        redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(0),
    )
    .expect("connection manager");
    let cache = Cache::builder(url)
        .namespace("bench-cr")
        .build()
        .await
        .expect("cache");
    let oxcache = match near {
        NearCache::On => Some(ox::build(url).await),
        NearCache::Off | NearCache::Lag(_) => None,
    };
    let near = near.build(url).await;
    let _ = CLIENTS.set(Clients {
        conn,
        cache,
        near,
        oxcache,
    });
    CLIENTS.get().expect("set")
}

/// The URL given to [`connect`].
pub(crate) fn url() -> String {
    URL.get().expect("connect first").clone()
}

pub(crate) fn clients() -> &'static Clients {
    CLIENTS.get().expect("connect first")
}

/// raw: one shared multiplexed connection, `GET` and `serde_json::from_slice`. Keys are
/// written beforehand by [`prime_raw`].
pub(crate) async fn raw_get(id: u64, size: usize) -> Option<Payload> {
    let mut conn = clients().conn.clone();
    let bytes: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("bench-raw:{size}:{id}"))
        .query_async(&mut conn)
        .await
        .ok()?;
    serde_json::from_slice(&bytes?).ok()
}

/// raw, many ids: one `MGET` of keys [`prime_raw`] wrote, each value decoded. The floor a
/// batch of hits is measured against.
pub(crate) async fn raw_mget(ids: &[u64], size: usize) -> Vec<Payload> {
    let mut conn = clients().conn.clone();
    let keys: Vec<String> = ids
        .iter()
        .map(|id| format!("bench-raw:{size}:{id}"))
        .collect();
    let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .expect("MGET");
    let decoded = values.into_iter().flatten();
    decoded
        .map(|bytes| serde_json::from_slice(&bytes).expect("a payload"))
        .collect()
}

pub(crate) async fn prime_raw(id: u64, size: usize) {
    let mut conn = clients().conn.clone();
    let json = serde_json::to_vec(&payload(id, size)).expect("json");
    let _: () = redis::cmd("SET")
        .arg(format!("bench-raw:{size}:{id}"))
        .arg(json)
        .query_async(&mut conn)
        .await
        .expect("SET");
}

/// hand-written cache-aside, as tutorials teach it: GET; on a miss (or any Redis error) load,
/// then `SET EX` without a lock.
pub(crate) async fn hand_written_get(
    id: u64,
    size: usize,
    delay_ms: u64,
) -> Result<Payload, BenchError> {
    let key = format!("bench-hw:{size}:{id}");
    hand_written(&key, Duration::from_secs(600), load(id, size, delay_ms)).await
}

/// The hand-written pattern on `key`: GET; on a miss (or any Redis error) `load`, then `SET`
/// with `ttl`, without a lock.
pub(crate) async fn hand_written(
    key: &str,
    ttl: Duration,
    load: impl std::future::Future<Output = Result<Payload, BenchError>>,
) -> Result<Payload, BenchError> {
    let mut conn = clients().conn.clone();
    let cached: redis::RedisResult<Option<Vec<u8>>> =
        redis::cmd("GET").arg(key).query_async(&mut conn).await;
    if let Ok(Some(bytes)) = cached
        && let Ok(value) = serde_json::from_slice(&bytes)
    {
        return Ok(value);
    }
    let value = load.await?;
    if let Ok(json) = serde_json::to_vec(&value) {
        let mut set = redis::cmd("SET");
        set.arg(key).arg(json).arg("PX").arg(ttl.as_millis() as u64);
        let _: redis::RedisResult<()> = set.query_async(&mut conn).await;
    }
    Ok(value)
}

/// The `cached` crate's Redis store behind `#[concurrent_cached]`, on a connection manager.
#[concurrent_cached(
    map_error = r##"|e| BenchError(format!("{e:?}"))"##,
    ty = "AsyncRedisCache<String, Payload>",
    create = r##"{
        AsyncRedisCache::builder("bench-cached")
            .ttl(Duration::from_secs(600))
            .connection_string(URL.get().expect("url"))
            .connection_manager(true)
            .build()
            .await
            .expect("cached's redis store")
    }"##,
    convert = r##"{ format!("{size}:{id}") }"##
)]
pub(crate) async fn cached_get(id: u64, size: usize, delay_ms: u64) -> Result<Payload, BenchError> {
    load(id, size, delay_ms).await
}

/// cached-redis: our attribute.
#[redis_cached(key = "p:<size>:<id>", ttl = "10m", cache = &clients().cache, skip = "delay_ms")]
pub(crate) async fn cached_redis_get(
    id: u64,
    size: usize,
    delay_ms: u64,
) -> Result<Payload, BenchError> {
    load(id, size, delay_ms).await
}

/// cached-redis `batch`: [`cached_redis_get`]'s entries, many ids a call; one load of the ids
/// not cached.
#[redis_cached(key = "p:<size>:<id>", ttl = "10m", cache = &clients().cache, batch)]
pub(crate) async fn cached_redis_batch(
    size: usize,
    ids: &[u64],
) -> Result<HashMap<u64, Payload>, BenchError> {
    LOADS.fetch_add(1, Ordering::Relaxed);
    Ok(ids.iter().map(|&id| (id, payload(id, size))).collect())
}

/// What a read returns: a payload decoded for this call, or the near cache's shared one.
#[derive(Debug)]
pub(crate) enum Value {
    Decoded(Payload),
    Shared(Arc<Payload>),
}

impl Deref for Value {
    type Target = Payload;

    fn deref(&self) -> &Payload {
        match self {
            Value::Decoded(p) => p,
            Value::Shared(p) => p,
        }
    }
}

/// One read through `system`. Raw reads primed keys only.
pub(crate) async fn get(
    system: System,
    id: u64,
    size: usize,
    delay_ms: u64,
) -> Result<Value, BenchError> {
    let decoded = match system {
        System::Raw => raw_get(id, size)
            .await
            .ok_or_else(|| BenchError("raw: key not primed or redis down".into())),
        System::HandWritten => hand_written_get(id, size, delay_ms).await,
        System::Cached => cached_get(id, size, delay_ms).await,
        System::CachedRedis => cached_redis_get(id, size, delay_ms).await,
        System::CachedRedisNear => return near_get(id, size, delay_ms).await.map(Value::Shared),
        System::Oxcache => oxcache_get(id, size, delay_ms).await,
    };
    decoded.map(Value::Decoded)
}

/// Makes `id` a near hit again before a measurement of the near system (copies live at most
/// 5 s), and an L1 hit of oxcache's (the same); nothing for the others, whose keys stay warm.
pub(crate) async fn ready(system: System, id: u64, size: usize) {
    if matches!(system, System::CachedRedisNear | System::Oxcache) {
        warm(system, id, size).await;
    }
}

/// Makes `id` a hit for `system` (for the near system, a near hit; for oxcache, in its L1: a
/// read that misses it writes the value from Redis, or the loaded one, back to it).
pub(crate) async fn warm(system: System, id: u64, size: usize) {
    match system {
        System::Raw => prime_raw(id, size).await,
        System::CachedRedisNear => {
            make_near(|| async move {
                near_get(id, size, 0).await.expect("warm-up read");
            })
            .await;
        }
        other => {
            get(other, id, size, 0).await.expect("warm-up read");
        }
    }
}
