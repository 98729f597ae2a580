//! One process of the consistency checker (tests/it/consistency.rs). Its tasks read and write a
//! small key space whose source of truth is a separate Redis (`INCR truth:<k>` is a write), every
//! write followed by `invalidate_*`, and it prints every event with wall-clock timestamps.
//!
//! Usage: `consistency-worker <cache-url> <truth-url> <seed> <tasks> <millis> <keys> <op-timeout-ms>`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cached_redis::{Cache, redis_cached};
use serde_json::json;

static CACHE: OnceLock<Cache> = OnceLock::new();
static TRUTH: OnceLock<redis::aio::MultiplexedConnection> = OnceLock::new();
static LOADS: Mutex<Vec<serde_json::Value>> = Mutex::new(Vec::new());
static NONCE: AtomicU64 = AtomicU64::new(1);

tokio::task_local! {
    /// When the current task's `read_row` call began. The loader runs inside that call (in the
    /// caller's own task), after the call took the key's lease, so this is a lower bound on
    /// when the lease was taken, recorded by the process that took it.
    static CALL_START: u64;
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[redis_cached(key = "row:<k>", ttl = "30s", cache = CACHE.get().expect("cache"))]
async fn read_row(k: u32) -> Result<u64, String> {
    let called = CALL_START.with(|start| *start);
    let start = now_us();
    let mut truth = TRUTH.get().expect("truth").clone();
    let version: Option<u64> = redis::cmd("GET")
        .arg(format!("truth:{k}"))
        .query_async(&mut truth)
        .await
        .map_err(|e| e.to_string())?;
    // Widen the window between reading the database and storing the value.
    let pause = NONCE.fetch_add(1, Ordering::Relaxed) % 4;
    tokio::time::sleep(Duration::from_millis(pause)).await;
    let version = version.unwrap_or(0);
    LOADS.lock().unwrap().push(
        json!({"k": k, "called": called, "start": start, "end": now_us(), "version": version}),
    );
    Ok(version)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cache_url, truth_url, seed, tasks, millis, keys, op_timeout] = args.as_slice() else {
        panic!(
            "usage: consistency-worker <cache-url> <truth-url> <seed> <tasks> <millis> <keys> <op-timeout-ms>"
        );
    };
    let seed: u64 = seed.parse().unwrap();
    let tasks: u64 = tasks.parse().unwrap();
    let keys: u64 = keys.parse().unwrap();
    let run_for = Duration::from_millis(millis.parse().unwrap());
    let cache = Cache::builder(cache_url)
        .namespace("consistency")
        .op_timeout(Duration::from_millis(op_timeout.parse().unwrap()))
        .lock_ttl(Duration::from_secs(2))
        .breaker_threshold(3)
        .breaker_cooldown(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    CACHE.set(cache).unwrap();
    let truth = redis::Client::open(truth_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    TRUTH.set(truth).unwrap();

    let deadline = Instant::now() + run_for;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            tokio::spawn(async move {
                let mut rng = cached_redis_tests::Rng::seeded(
                    seed.wrapping_mul(1_000_003) ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                let mut reads = Vec::new();
                let mut writes = Vec::new();
                let mut truth = TRUTH.get().unwrap().clone();
                while Instant::now() < deadline {
                    let k = rng.below(keys) as u32;
                    if rng.below(100) < 15 {
                        let version: u64 = redis::cmd("INCR")
                            .arg(format!("truth:{k}"))
                            .query_async(&mut truth)
                            .await
                            .unwrap();
                        let inv_start = now_us();
                        let ok = invalidate_read_row(k).await.is_ok();
                        writes.push(json!({"k": k, "version": version, "inv_start": inv_start, "inv_end": now_us(), "ok": ok}));
                    } else {
                        let trouble = || {
                            let stats = CACHE.get().unwrap().stats();
                            stats.redis_errors + stats.fallbacks
                        };
                        let trouble_before = trouble();
                        let start = now_us();
                        let version = CALL_START.scope(start, read_row(k)).await.unwrap();
                        // Whether any call of this process had Redis trouble meanwhile: then
                        // this read may not have reached Redis.
                        let troubled = trouble() != trouble_before;
                        reads.push(json!({"k": k, "start": start, "end": now_us(), "version": version, "troubled": troubled}));
                    }
                    tokio::time::sleep(Duration::from_micros(rng.below(1500))).await;
                }
                (reads, writes)
            })
        })
        .collect();
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for handle in handles {
        let (r, w) = handle.await.unwrap();
        reads.extend(r);
        writes.extend(w);
    }
    let stats = CACHE.get().unwrap().stats();
    let loads = std::mem::take(&mut *LOADS.lock().unwrap());
    println!(
        "{}",
        json!({"reads": reads, "writes": writes, "loads": loads, "redis_errors": stats.redis_errors})
    );
}
