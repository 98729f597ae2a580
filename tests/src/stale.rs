//! Entries past their TTL on purpose (`stale`): a policy with one, a loader a test holds at a
//! gate, an entry aged into its stale window ([`expire_in`]) rather than by waiting, and a
//! refresh held while it runs.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, Policy};
use tokio::task::JoinHandle;

use crate::{Gate, RedisServer};

/// The TTL of [`policy`].
pub const TTL: Duration = Duration::from_secs(60);
/// The `stale` of [`policy`].
pub const STALE: Duration = Duration::from_secs(60);

/// A policy of `TTL`, with `stale` of `STALE`.
pub fn policy(name: &'static str) -> Policy {
    Policy::new(name, TTL).unwrap().with_stale(STALE).unwrap()
}

/// A loader whose first call answers at once and whose later calls wait at `gate`; each
/// answers `v<n>`, `n` its turn.
pub fn loader(
    loads: &Arc<AtomicU32>,
    gate: &Gate,
) -> impl Future<Output = Result<String, String>> + Send + 'static {
    let (loads, gate) = (loads.clone(), gate.clone());
    async move {
        let n = loads.fetch_add(1, Ordering::SeqCst);
        if n > 0 {
            gate.passed().await;
        }
        Ok(format!("v{n}"))
    }
}

/// Moves the entry of `key` into its stale window: its TTL is over, `stale` is not.
pub async fn make_stale(server: &RedisServer, cache: &Cache, key: &Key) {
    let mut conn = server.conn().await;
    let stale_ms = STALE.as_millis() as u64;
    assert!(expire_in(&mut conn, &cache.redis_key(key), stale_ms / 2).await);
    // In the near pass, the cache's copy goes with Redis's message for the rewrite.
    crate::near_caught_up(cache).await;
}

/// Ages the entry at `redis_key` as if time had passed until Redis has `left_ms` of it left:
/// its Redis TTL is set to `left_ms`, and its soft expiry (`exp`) and load time (`at`) move
/// back by as much as its TTL shortened. Returns whether the entry exists.
pub async fn expire_in(
    conn: &mut redis::aio::MultiplexedConnection,
    redis_key: &str,
    left_ms: u64,
) -> bool {
    let pttl: i64 = redis::cmd("PTTL")
        .arg(redis_key)
        .query_async(conn)
        .await
        .unwrap();
    let stored: Option<Vec<u8>> = redis::cmd("GET")
        .arg(redis_key)
        .query_async(conn)
        .await
        .unwrap();
    let (Some(stored), Ok(pttl)) = (stored, u64::try_from(pttl)) else {
        return false;
    };
    let by = pttl.saturating_sub(left_ms);
    let aged = match serde_json::from_slice::<serde_json::Value>(&stored) {
        Ok(mut envelope) => {
            for field in ["exp", "at"] {
                if let Some(n) = envelope[field].as_u64().filter(|n| *n > 0) {
                    envelope[field] = n.saturating_sub(by).into();
                }
            }
            serde_json::to_vec(&envelope).unwrap()
        }
        Err(_) => stored,
    };
    let _: () = redis::cmd("SET")
        .arg(redis_key)
        .arg(aged)
        .arg("PX")
        .arg(left_ms)
        .query_async(conn)
        .await
        .unwrap();
    true
}

/// A stale entry of `name` whose refresh is running and held at the gate: the entry's first
/// load (`v0`) stored, its TTL over, one call refreshing it. Returns the key, the policy, the
/// load count, the gate and the refreshing call.
pub async fn held_refresh(
    server: &RedisServer,
    cache: &Cache,
    name: &'static str,
) -> (
    Key,
    Policy,
    Arc<AtomicU32>,
    Gate,
    JoinHandle<Result<String, String>>,
) {
    let (key, loads, gate) = (Key::raw(name), Arc::new(AtomicU32::new(0)), Gate::new());
    let policy = policy(name);
    let first = cache.fetch(&key, &policy, loader(&loads, &gate)).await;
    assert_eq!(first.as_deref(), Ok("v0"));
    cache.settle().await;
    make_stale(server, cache, &key).await;
    let refreshing = {
        let (cache, key, loads, gate) = (cache.clone(), key.clone(), loads.clone(), gate.clone());
        tokio::spawn(async move { cache.fetch(&key, &policy, loader(&loads, &gate)).await })
    };
    // The refresh holds the lease and waits at the gate.
    let started = Instant::now();
    while loads.load(Ordering::SeqCst) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the refresh never loaded"
        );
        tokio::task::yield_now().await;
    }
    (key, policy, loads, gate, refreshing)
}

/// Moves the load time (`at`) and soft expiry (`exp`) of the entry at `redis_key` back by
/// `back`, and keeps it in Redis for `px` milliseconds: an entry that is old by its metadata,
/// whatever Redis's own expiry says.
pub async fn age_by_load_time(
    conn: &mut redis::aio::MultiplexedConnection,
    redis_key: &str,
    back: Duration,
    px: u64,
) {
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(redis_key)
        .query_async(conn)
        .await
        .unwrap();
    let mut envelope: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    for field in ["at", "exp"] {
        if let Some(n) = envelope[field].as_u64() {
            envelope[field] = (n - back.as_millis() as u64).into();
        }
    }
    let _: () = redis::cmd("SET")
        .arg(redis_key)
        .arg(serde_json::to_vec(&envelope).unwrap())
        .arg("PX")
        .arg(px)
        .query_async(conn)
        .await
        .unwrap();
}
