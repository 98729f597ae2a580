//! One process of the consistency checker (tests/it/consistency.rs). Its tasks read and write a
//! small key space whose source of truth is a separate Redis (`INCR truth:<k>` is a write), every
//! write followed by `invalidate_*`, and it prints every event with wall-clock timestamps.
//!
//! Usage: `consistency-worker <cache-url> <truth-url> <seed> <tasks> <millis> <keys> <op-timeout-ms>`
//!
//! `CONSISTENCY_WRITE_PERCENT` is the share of writes among a task's operations (15 unless
//! set). With `CONSISTENCY_NEAR_LAG_MS` set, the cache keeps near copies (`near_cache`, with that
//! `near_max_lag`) and reads go through a function with `near`; a writer then reads its key
//! back at once (the tightest test of its own process's reads), and after the run, once all
//! `CONSISTENCY_WORKERS` workers are done writing and the lag has passed, it reads every key
//! until one read is a near hit ("settled" reads). With `CONSISTENCY_FRESHNESS` set, reads go
//! through functions with a 20 ms TTL and `stale` (early refresh too, for odd keys), whose
//! refreshes run in the background. With `CONSISTENCY_BATCH` set, each read reads three
//! consecutive keys through a `batch` function (a read event for each), whose loader reads the
//! truth of every id it is given.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cached_redis::{Cache, redis_cached};
use serde_json::{Value, json};

static CACHE: OnceLock<Cache> = OnceLock::new();
static TRUTH: OnceLock<redis::aio::MultiplexedConnection> = OnceLock::new();
static LOADS: Mutex<Vec<Value>> = Mutex::new(Vec::new());
static NONCE: AtomicU64 = AtomicU64::new(1);

tokio::task_local! {
    /// When the current task's `read_row` (or `read_row_near`) call began. The loader runs
    /// inside that call (in the caller's own task), after the call took the key's lease, so
    /// this is a lower bound on when the lease was taken, recorded by the process that took it.
    static CALL_START: u64;
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// What every task of this process shares.
#[derive(Debug, Clone, Copy)]
struct Run {
    seed: u64,
    keys: u64,
    /// The share of writes among the operations, in percent.
    write_percent: u64,
    deadline: Instant,
    /// Which function reads.
    reads: Reads,
}

/// Which function reads the rows (all three read and write the same entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// [`read_row`].
    Plain,
    /// [`read_row_near`]: the cache keeps near copies.
    Near,
    /// [`read_row_fresh`]: entries served stale and refreshed early, in the background.
    Fresh,
    /// [`read_rows`]: three keys a read, in one batch.
    Batch,
}

#[redis_cached(key = "row:<k>", ttl = "30s", cache = CACHE.get().expect("cache"))]
async fn read_row(k: u32) -> Result<u64, String> {
    load_row(k, CALL_START.with(|start| *start)).await
}

/// [`read_row`]'s entries, with near copies kept for up to 5 s.
#[redis_cached(key = "row:<k>", ttl = "30s", near = "5s", cache = CACHE.get().expect("cache"))]
async fn read_row_near(k: u32) -> Result<u64, String> {
    load_row(k, CALL_START.with(|start| *start)).await
}

/// [`read_row`]'s entries, past their 20 ms TTL served for 10 s more while one refresh runs,
/// and refreshed early (loads of a few ms, `beta` 2). The body owns what it reads, so
/// refreshes run in the background: the call's start comes as an argument, not from the
/// task-local, which a refresh's own task does not have.
#[redis_cached(key = "row:<k>", ttl = "20ms", stale = "10s", refresh = "early", beta = 2.0, cache = CACHE.get().expect("cache"), skip = "called")]
async fn read_row_fresh(k: u32, called: u64) -> Result<u64, String> {
    load_row(k, called).await
}

/// As [`read_row_fresh`] without early refresh: its entries expire, and are served stale.
#[redis_cached(key = "row:<k>", ttl = "20ms", stale = "10s", cache = CACHE.get().expect("cache"), skip = "called")]
async fn read_row_stale(k: u32, called: u64) -> Result<u64, String> {
    load_row(k, called).await
}

/// [`read_row`]'s entries, many keys a call: the loader is given the keys not cached.
#[redis_cached(key = "row:<k>", ttl = "30s", cache = CACHE.get().expect("cache"), batch)]
async fn read_rows(ks: &[u32]) -> Result<HashMap<u32, u64>, String> {
    let called = CALL_START.with(|start| *start);
    let mut found = HashMap::new();
    for &k in ks {
        found.insert(k, load_row(k, called).await?);
    }
    Ok(found)
}

/// The loader: reads the truth, and records the load (`called`: when the call that took the
/// lease began).
async fn load_row(k: u32, called: u64) -> Result<u64, String> {
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

/// One read, recorded with whether any call of this process had Redis trouble while it ran
/// (then it may not have reached Redis).
async fn read(k: u32, reads: Reads) -> Value {
    let trouble = || {
        let stats = CACHE.get().unwrap().stats();
        stats.redis_errors + stats.fallbacks
    };
    let trouble_before = trouble();
    let start = now_us();
    let call = async {
        match reads {
            Reads::Plain => read_row(k).await,
            Reads::Near => read_row_near(k).await,
            // Odd keys are refreshed early, even ones served stale.
            Reads::Fresh if k % 2 == 1 => read_row_fresh(k, start).await,
            Reads::Fresh => read_row_stale(k, start).await,
            Reads::Batch => unreachable!("batch reads are read_batch's"),
        }
    };
    let version = CALL_START.scope(start, call).await.unwrap();
    let troubled = trouble() != trouble_before;
    json!({"k": k, "start": start, "end": now_us(), "version": version, "troubled": troubled})
}

/// One batch read of `k` and the two keys after it, recorded as a read of each (with whether
/// any call of this process had Redis trouble while it ran).
async fn read_batch(k: u32, keys: u64) -> Vec<Value> {
    let stats = || {
        let stats = CACHE.get().unwrap().stats();
        stats.redis_errors + stats.fallbacks
    };
    let trouble_before = stats();
    let start = now_us();
    let ks: Vec<u32> = (0..3).map(|i| (k + i) % keys as u32).collect();
    let found = CALL_START.scope(start, read_rows(&ks)).await.unwrap();
    let (end, troubled) = (now_us(), stats() != trouble_before);
    let read = |(k, version): (&u32, &u64)| json!({"k": k, "start": start, "end": end, "version": version, "troubled": troubled});
    found.iter().map(read).collect()
}

/// One write: `INCR` the truth, then invalidate the entry.
async fn write(k: u32, reads: Reads) -> Value {
    let mut truth = TRUTH.get().unwrap().clone();
    let version: u64 = redis::cmd("INCR")
        .arg(format!("truth:{k}"))
        .query_async(&mut truth)
        .await
        .unwrap();
    let inv_start = now_us();
    let ok = match reads {
        Reads::Plain => invalidate_read_row(k).await.is_ok(),
        Reads::Near => invalidate_read_row_near(k).await.is_ok(),
        Reads::Fresh => invalidate_read_row_fresh(k).await.is_ok(),
        Reads::Batch => invalidate_read_rows(&[k]).await.is_ok(),
    };
    json!({"k": k, "version": version, "inv_start": inv_start, "inv_end": now_us(), "ok": ok})
}

/// One task: random reads and writes until the deadline. Returns its reads and writes.
async fn task(run: Run, t: u64) -> (Vec<Value>, Vec<Value>) {
    let mut rng = cached_redis_tests::Rng::seeded(
        run.seed.wrapping_mul(1_000_003) ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    while Instant::now() < run.deadline {
        let k = rng.below(run.keys) as u32;
        if rng.below(100) < run.write_percent {
            writes.push(write(k, run.reads).await);
            if run.reads == Reads::Near {
                reads.push(read(k, Reads::Near).await);
            }
        } else if run.reads == Reads::Batch {
            reads.extend(read_batch(k, run.keys).await);
        } else {
            reads.push(read(k, run.reads).await);
        }
        tokio::time::sleep(Duration::from_micros(rng.below(1500))).await;
    }
    (reads, writes)
}

/// The settled reads: once all `workers` are done writing (a count in the truth Redis) and
/// `lag` has passed, every process's reads must see the truth, near hits included. Reads
/// every key until one read is a near hit; returns the reads and the near hits among them.
async fn settle(keys: u64, workers: u64, lag: Duration) -> (Vec<Value>, u64) {
    let mut truth = TRUTH.get().unwrap().clone();
    let count = |command: &str| redis::cmd(command).arg("settled").clone();
    let _: u64 = count("INCR").query_async(&mut truth).await.unwrap();
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let done: u64 = count("GET").query_async(&mut truth).await.unwrap();
        if done >= workers {
            break;
        }
        assert!(Instant::now() < give_up, "the other workers never finished");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(lag).await;
    let cache = CACHE.get().unwrap();
    let hits_before = cache.stats().near_hits;
    let mut reads = Vec::new();
    for k in 0..keys as u32 {
        // Bounded in time: a starved process's heartbeat may fail, and near hits pause.
        let give_up = Instant::now() + Duration::from_secs(3);
        while Instant::now() < give_up {
            let before = cache.stats().near_hits;
            let mut r = read(k, Reads::Near).await;
            r["settled"] = json!(true);
            reads.push(r);
            if cache.stats().near_hits > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    (reads, cache.stats().near_hits - hits_before)
}

/// The cache under test; with `near_lag`, keeping near copies, and once its tracking
/// connection is live (copies are served only then).
async fn build_cache(url: &str, op_timeout: Duration, near_lag: Option<Duration>) -> Cache {
    let mut builder = Cache::builder(url)
        .namespace("consistency")
        .op_timeout(op_timeout)
        .lock_ttl(Duration::from_secs(2))
        .breaker_threshold(3)
        .breaker_cooldown(Duration::from_millis(100));
    if let Some(lag) = near_lag {
        builder = builder.near_cache(1_000).near_max_lag(lag);
    }
    let cache = builder.build().await.unwrap();
    let give_up = Instant::now() + Duration::from_secs(10);
    while near_lag.is_some() && !cache.near_is_live() {
        assert!(
            Instant::now() < give_up,
            "the tracking connection never came up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cache
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().expect(name))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cache_url, truth_url, seed, tasks, millis, keys, op_timeout] = args.as_slice() else {
        panic!(
            "usage: consistency-worker <cache-url> <truth-url> <seed> <tasks> <millis> <keys> <op-timeout-ms>"
        );
    };
    let near_lag = env_u64("CONSISTENCY_NEAR_LAG_MS").map(Duration::from_millis);
    let op_timeout = Duration::from_millis(op_timeout.parse().unwrap());
    CACHE
        .set(build_cache(cache_url, op_timeout, near_lag).await)
        .unwrap();
    // No response timeout (redis-rs's default is 500 ms): a stalled worker's calls in flight
    // must not fail when it resumes.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let truth = redis::Client::open(truth_url.as_str()).unwrap();
    let truth = truth.get_multiplexed_async_connection_with_config(&config);
    let truth = truth.await.unwrap();
    TRUTH.set(truth).unwrap();

    let run = Run {
        seed: seed.parse().unwrap(),
        keys: keys.parse().unwrap(),
        write_percent: env_u64("CONSISTENCY_WRITE_PERCENT").unwrap_or(15),
        deadline: Instant::now() + Duration::from_millis(millis.parse().unwrap()),
        reads: match (near_lag, std::env::var_os("CONSISTENCY_FRESHNESS")) {
            (Some(_), _) => Reads::Near,
            (None, Some(_)) => Reads::Fresh,
            (None, None) if std::env::var_os("CONSISTENCY_BATCH").is_some() => Reads::Batch,
            (None, None) => Reads::Plain,
        },
    };
    let tasks: u64 = tasks.parse().unwrap();
    let handles: Vec<_> = (0..tasks).map(|t| tokio::spawn(task(run, t))).collect();
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    for handle in handles {
        let (r, w) = handle.await.unwrap();
        reads.extend(r);
        writes.extend(w);
    }
    let mut settled_hits = 0;
    if let Some(lag) = near_lag {
        let workers = env_u64("CONSISTENCY_WORKERS").expect("CONSISTENCY_WORKERS");
        let (settled, hits) = settle(run.keys, workers, lag).await;
        reads.extend(settled);
        settled_hits = hits;
    }
    // Refreshes running in the background load and store before the loads are taken.
    CACHE.get().unwrap().settle().await;
    let stats = CACHE.get().unwrap().stats();
    let loads = std::mem::take(&mut *LOADS.lock().unwrap());
    let near = json!({
        "hits": stats.near_hits,
        "settled_hits": settled_hits,
        "flushes": stats.near_flushes,
        "rejected": stats.near_rejected,
    });
    println!(
        "{}",
        json!({"reads": reads, "writes": writes, "loads": loads, "redis_errors": stats.redis_errors, "near": near, "stale_served": stats.stale_served, "refreshes": stats.refreshes})
    );
}
