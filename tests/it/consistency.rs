//! The consistency checker: several OS processes × many tasks read and write a small key space
//! whose source of truth is a separate Redis (written with `INCR`, each write followed by
//! `invalidate_*`). Every read, write and load is recorded with wall-clock timestamps, then:
//!
//! 1. no read that started after a write's `invalidate_*` returned sees an older version, in
//!    the same process or another;
//! 2. once the run is quiet, every cached entry equals the truth;
//! 3. loads of one key never overlap unless an invalidation of that key came between them (it
//!    revokes the first load's lease) while Redis is healthy.
//!
//! Run again with the cache's Redis killed and restarted during the run: (1) holds for every
//! read during which its process had no Redis trouble (recorded by the worker from its
//! cache's counters, not guessed from wall-clock windows), writers whose invalidation failed
//! were told so, and a stale entry can only stem from such a failed invalidation and expires
//! with its TTL.
//!
//! Run again with reads through functions with `stale` and early refresh (a 20 ms TTL, fewer
//! writes, refreshes in the background): checks 1 to 3 as above, with entries served stale and
//! refreshed among the reads.
//!
//! Run again, twice as long, with near copies (`near_cache`, `near_max_lag` [`NEAR_LAG`], reads
//! through a function with `near`, fewer writes: [`NEAR_WRITE_PERCENT`]), each worker in turn
//! stopped (`SIGSTOP`) for longer than the lag while the others write, its tracking connection
//! held until after it resumes (then only the lag can stop its stale copies), and each writer
//! reading its key back at once:
//!
//! 1'. no read that started after a write's `invalidate_*` returned sees an older version if it
//!     ran in the writer's own process; in another process, none that started later than the
//!     lag after it (those within the lag are counted and printed, with the longest lag seen);
//!     and once every worker is done writing and the lag has passed, every process's reads
//!     (near hits among them) see the truth;
//! 2.  as above;
//! 3.  as above (a near hit is no load, and takes no lease), and each worker's near hits and
//!     loads together are at most its reads.
//!
//! and near hits must be a substantial part of each worker's reads ([`NEAR_HITS_MIN_PERCENT`]).
//!
//! Seeded and reproducible: `CACHED_REDIS_CHECK_SEED` picks the seed, and
//! `CACHED_REDIS_CHECK_MILLIS` runs it longer than the CI budget.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cached_redis_tests::{Proxy, RedisServer};
use serde::Deserialize;
use tokio::process::Child;

#[derive(Debug, Deserialize)]
struct Read {
    k: u32,
    start: u64,
    version: u64,
    /// A call in the same process had Redis trouble while this read ran, so it may not have
    /// reached Redis.
    troubled: bool,
    /// Made once every worker was done writing and the near lag had passed.
    #[serde(default)]
    settled: bool,
    /// The worker that made it (its index in the run).
    #[serde(skip)]
    process: usize,
}

#[derive(Debug, Deserialize)]
struct Write {
    k: u32,
    version: u64,
    inv_start: u64,
    inv_end: u64,
    ok: bool,
    /// The worker that made it (its index in the run).
    #[serde(skip)]
    process: usize,
}

#[derive(Debug, Deserialize)]
struct Load {
    k: u32,
    /// When the call that ran this load began: it took the lease after this.
    called: u64,
    start: u64,
    end: u64,
}

/// A worker's near cache counters (`Cache::stats`), at its end.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct NearCounts {
    hits: u64,
    /// Of `hits`, those of the settled reads.
    settled_hits: u64,
    flushes: u64,
    rejected: u64,
}

/// What one worker did, in numbers.
#[derive(Debug)]
struct Worker {
    reads: usize,
    settled_reads: usize,
    loads: usize,
    near: NearCounts,
}

/// One worker's output.
#[derive(Debug, Deserialize)]
struct Part {
    reads: Vec<Read>,
    writes: Vec<Write>,
    loads: Vec<Load>,
    redis_errors: u64,
    near: NearCounts,
    stale_served: u64,
    refreshes: u64,
}

/// Every worker's events, merged.
#[derive(Debug, Default)]
struct Events {
    reads: Vec<Read>,
    writes: Vec<Write>,
    loads: Vec<Load>,
    /// Redis calls that failed or timed out, over all workers.
    redis_errors: u64,
    /// Calls answered with an entry past its TTL, and refreshes, over all workers.
    stale_served: u64,
    refreshes: u64,
    /// Per worker, in run order.
    workers: Vec<Worker>,
}

const KEYS: u32 = 6;
const PROCESSES: u32 = 3;
const TASKS: u32 = 6;

/// The freshness run's share of writes, in percent: few enough that entries outlive their
/// 20 ms TTL between invalidations, and are served stale.
const FRESH_WRITE_PERCENT: u32 = 3;

/// The near run's `near_max_lag`.
const NEAR_LAG: Duration = Duration::from_millis(200);

/// The near run's share of writes among the operations, in percent (the others run with 15):
/// a near cache is for values read far more often than written, and a stalled worker must hold
/// copies for the stall to test anything.
const NEAR_WRITE_PERCENT: u32 = 5;

/// How long the near run stops each worker in turn: well past the lag, so that when it
/// resumes, other processes' writes have made its copies stale for longer than the lag
/// allows.
const STALL: Duration = Duration::from_millis(300);

/// How long a stalled worker's tracking connection stays held after it resumes: longer than
/// its heartbeat's reply timeout (half the lag), so that until then only the lag can stop its
/// stale copies (its tracking connection last confirmed before the stall).
const HELD_AFTER_RESUME: Duration = Duration::from_millis(150);

/// What a run does to the workers besides letting them read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing: Redis stays healthy.
    Healthy,
    /// Kills and restarts the cache's Redis.
    Restarts,
    /// Workers keep near copies ([`NEAR_LAG`]), each reaching Redis through a proxy of its
    /// own; each in turn is stopped for [`STALL`], its tracking connection held.
    Near,
    /// Redis stays healthy; reads go through functions with a 20 ms TTL, `stale` and early
    /// refresh, refreshed in the background; fewer writes ([`FRESH_WRITE_PERCENT`]).
    Fresh,
    /// Redis stays healthy; each read reads three consecutive keys through a `batch` function.
    Batch,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the workers, disturbed as `mode` says, and returns their events and how many times
/// they were disturbed (Redis restarts, or worker stalls).
async fn run(
    cache: &mut RedisServer,
    truth: &RedisServer,
    seed: u64,
    mode: Mode,
) -> (Events, usize) {
    let millis = env_u64("CACHED_REDIS_CHECK_MILLIS", 2500);
    // The near run's stalls need the time: twice as long.
    let millis = if mode == Mode::Near {
        2 * millis
    } else {
        millis
    };
    let mut proxies = Vec::new();
    if mode == Mode::Near {
        for _ in 0..PROCESSES {
            proxies.push(Proxy::start(cache.port()).await);
        }
    }
    let workers: Vec<_> = (0..PROCESSES)
        .map(|p| {
            let url = proxies
                .get(p as usize)
                .map_or_else(|| cache.url(), Proxy::url);
            spawn_worker(&url, truth, seed + u64::from(p), millis, mode)
        })
        .collect();
    let disturbances = match mode {
        Mode::Healthy | Mode::Fresh | Mode::Batch => 0,
        Mode::Restarts => restart_during(cache, millis).await,
        Mode::Near => stall_in_turn(cache, &workers, &proxies, millis).await,
    };
    (collect(workers).await, disturbances)
}

fn spawn_worker(cache_url: &str, truth: &RedisServer, seed: u64, millis: u64, mode: Mode) -> Child {
    // With restarts, calls must give up on a dead Redis quickly; on a healthy one, no call may
    // time out even on a loaded machine, since check 3 holds only while Redis answers.
    let op_timeout_ms = if mode == Mode::Restarts { 100 } else { 5_000 };
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_consistency-worker"));
    command
        .args([
            cache_url.to_owned(),
            truth.url(),
            seed.to_string(),
            TASKS.to_string(),
            millis.to_string(),
            KEYS.to_string(),
            op_timeout_ms.to_string(),
        ])
        .env_remove("CONSISTENCY_NEAR_LAG_MS")
        .env_remove("CONSISTENCY_WRITE_PERCENT")
        .env_remove("CONSISTENCY_FRESHNESS")
        .env_remove("CONSISTENCY_BATCH")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if mode == Mode::Near {
        command
            .env("CONSISTENCY_NEAR_LAG_MS", NEAR_LAG.as_millis().to_string())
            .env("CONSISTENCY_WORKERS", PROCESSES.to_string())
            .env("CONSISTENCY_WRITE_PERCENT", NEAR_WRITE_PERCENT.to_string());
    }
    if mode == Mode::Fresh {
        command
            .env("CONSISTENCY_FRESHNESS", "1")
            .env("CONSISTENCY_WRITE_PERCENT", FRESH_WRITE_PERCENT.to_string());
    }
    if mode == Mode::Batch {
        command.env("CONSISTENCY_BATCH", "1");
    }
    command.spawn().expect("spawn worker")
}

/// Kills and restarts the cache's Redis during the run; returns how many times it did.
async fn restart_during(cache: &mut RedisServer, millis: u64) -> usize {
    let end = Instant::now() + Duration::from_millis(millis);
    let mut outages = 0;
    tokio::time::sleep(Duration::from_millis(400)).await;
    while Instant::now() + Duration::from_millis(300) < end {
        cache.kill();
        tokio::time::sleep(Duration::from_millis(150)).await;
        cache.restart();
        outages += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    outages
}

/// Stops each worker in turn (`SIGSTOP`) for [`STALL`] while the others go on, as a VM pause
/// or a starved runtime would, with the replies on its near cache's tracking connection held
/// by its proxy; resumes it (`SIGCONT`) and lets them through [`HELD_AFTER_RESUME`] later. On
/// resuming, its copies are stale, its tracking connection has delivered no invalidation and
/// its heartbeat has not failed yet, while its other connections answer: only the lag stops
/// its near hits. Returns how many stalls it made.
async fn stall_in_turn(
    cache: &RedisServer,
    workers: &[Child],
    proxies: &[Proxy],
    millis: u64,
) -> usize {
    let end = Instant::now() + Duration::from_millis(millis);
    let pause = Duration::from_millis(100);
    let mut redis = cache.conn().await;
    let mut stalls = 0;
    tokio::time::sleep(2 * pause).await;
    for (worker, proxy) in workers.iter().zip(proxies).cycle() {
        if Instant::now() + STALL + HELD_AFTER_RESUME + pause > end {
            break;
        }
        let pid = worker.id().expect("a running worker").to_string();
        let Some(tracker) = tracking_connection(proxy, &mut redis).await else {
            // Not connected (yet, or again after a failed heartbeat): the next worker.
            tokio::time::sleep(pause).await;
            continue;
        };
        // Stopped first: a heartbeat sent after the hold would time out the moment it
        // resumes. Held at once: what passes meanwhile is applied as it resumes.
        signal("-STOP", &pid);
        proxy.hold_replies(tracker);
        tokio::time::sleep(STALL).await;
        signal("-CONT", &pid);
        tokio::time::sleep(HELD_AFTER_RESUME).await;
        proxy.release_replies(tracker);
        stalls += 1;
        tokio::time::sleep(pause).await;
    }
    stalls
}

/// Among `proxy`'s connections, the near cache's tracking connection: the client Redis flags
/// `t` (tracking).
async fn tracking_connection(
    proxy: &Proxy,
    redis: &mut redis::aio::MultiplexedConnection,
) -> Option<usize> {
    let tracking = |fields: &[&str]| {
        fields
            .iter()
            .any(|f| f.starts_with("flags=") && f.contains('t'))
    };
    proxy.connection_of_client(redis, tracking).await
}

fn signal(signal: &str, pid: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Waits for the workers and merges their events, each marked with its worker.
async fn collect(workers: Vec<Child>) -> Events {
    let mut events = Events::default();
    for (process, worker) in workers.into_iter().enumerate() {
        let output = worker.wait_with_output().await.unwrap();
        assert!(output.status.success(), "a worker failed");
        let part: Part = serde_json::from_slice(&output.stdout).expect("worker events");
        events.workers.push(Worker {
            reads: part.reads.len(),
            settled_reads: part.reads.iter().filter(|r| r.settled).count(),
            loads: part.loads.len(),
            near: part.near,
        });
        let reads = part.reads.into_iter().map(|r| Read { process, ..r });
        events.reads.extend(reads);
        let writes = part.writes.into_iter().map(|w| Write { process, ..w });
        events.writes.extend(writes);
        events.loads.extend(part.loads);
        events.redis_errors += part.redis_errors;
        events.stale_served += part.stale_served;
        events.refreshes += part.refreshes;
    }
    events
}

/// Each key's writes whose invalidation succeeded.
fn ok_writes(events: &Events) -> HashMap<u32, Vec<&Write>> {
    let mut writes: HashMap<u32, Vec<&Write>> = HashMap::new();
    for w in events.writes.iter().filter(|w| w.ok) {
        writes.entry(w.k).or_default().push(w);
    }
    writes
}

/// Check 1. Returns the violations among the reads that had no Redis trouble.
fn reads_after_invalidation(events: &Events) -> Vec<String> {
    let writes = ok_writes(events);
    let mut violations = Vec::new();
    for r in &events.reads {
        let newest_before = writes
            .get(&r.k)
            .into_iter()
            .flatten()
            .filter(|w| w.inv_end < r.start)
            .map(|w| w.version)
            .max()
            .unwrap_or(0);
        if r.version < newest_before && !r.troubled {
            violations.push(format!("{r:?} saw a version older than {newest_before}"));
        }
    }
    violations
}

/// What check 1' found among the reads.
#[derive(Debug, Default)]
struct NearReads {
    violations: Vec<String>,
    /// For each read that missed writes of other processes only, all of them within the lag
    /// (allowed): how long after the earliest of them returned it started, in µs.
    lags_us: Vec<u64>,
}

/// Check 1': a read may miss a write whose `invalidate_*` returned before it started only if
/// the write was another process's and returned at most `lag` before the read started.
fn near_reads(events: &Events, lag: Duration) -> NearReads {
    let writes = ok_writes(events);
    let lag_us = u64::try_from(lag.as_micros()).unwrap();
    let mut found = NearReads::default();
    for r in &events.reads {
        let missed: Vec<&Write> = writes
            .get(&r.k)
            .into_iter()
            .flatten()
            .copied()
            .filter(|w| w.inv_end < r.start && w.version > r.version)
            .collect();
        let Some(first) = missed.iter().min_by_key(|w| w.inv_end) else {
            continue;
        };
        let late_us = r.start - first.inv_end;
        let violation = if let Some(own) = missed.iter().find(|w| w.process == r.process) {
            format!("{r:?} missed {own:?} of its own process")
        } else if late_us > lag_us {
            format!("{r:?} missed {first:?} {late_us} µs after it returned (lag {lag:?})")
        } else {
            found.lags_us.push(late_us);
            continue;
        };
        found.violations.push(violation);
    }
    found
}

/// The settled reads that did not see the truth: every write succeeded (checked), so the
/// truth is each key's last written version.
fn settled_reads(events: &Events) -> Vec<String> {
    let mut truth: HashMap<u32, u64> = HashMap::new();
    for w in &events.writes {
        let last = truth.entry(w.k).or_default();
        *last = (*last).max(w.version);
    }
    let truth = |k| truth.get(&k).copied().unwrap_or(0);
    (events.reads.iter().filter(|r| r.settled))
        .filter(|r| r.version != truth(r.k))
        .map(|r| format!("{r:?}, the truth is {}", truth(r.k)))
        .collect()
}

/// The least share of a worker's reads (before the settled ones) that near hits must be, in
/// percent: the run must exercise them. They are about two thirds on an idle machine; on a
/// starved one, failed heartbeats turn near hits off for a while, and the share falls to a
/// fifth.
const NEAR_HITS_MIN_PERCENT: u64 = 10;

/// Per worker: near hits were a substantial part of its reads, at least one settled read
/// was a near hit (copies are served once settled, and see the truth), and a near hit is no
/// load: near hits and loads together are at most its reads.
fn near_counts(events: &Events) -> Vec<String> {
    let mut problems = Vec::new();
    for (p, w) in events.workers.iter().enumerate() {
        let main_reads = (w.reads - w.settled_reads) as u64;
        let main_hits = w.near.hits - w.near.settled_hits;
        println!(
            "  worker {p}: {} reads, {} near hits ({main_hits} of {main_reads} before settling, {}%; {} of {} settled), {} loads, {} near flushes, {} near rejected",
            w.reads,
            w.near.hits,
            main_hits * 100 / main_reads.max(1),
            w.near.settled_hits,
            w.settled_reads,
            w.loads,
            w.near.flushes,
            w.near.rejected,
        );
        if main_hits * 100 < main_reads * NEAR_HITS_MIN_PERCENT {
            problems.push(format!(
                "worker {p}: {main_hits} near hits in {main_reads} reads"
            ));
        }
        if w.near.settled_hits == 0 {
            problems.push(format!("worker {p}: no settled read was a near hit"));
        }
        if w.near.hits + w.loads as u64 > w.reads as u64 {
            problems.push(format!(
                "worker {p}: near hits and loads exceed reads: {w:?}"
            ));
        }
    }
    problems
}

/// Check 3: every pair of overlapping loads of a key has an invalidation of it in between.
///
/// Each load's lease was taken at some moment in `[called, start]`, bounds recorded by the
/// process that owns the load, so the check needs no slack for scheduling delays. Either lease
/// may be the earlier one (a load can start later and still have taken its lease first). A
/// second lease while the first is held needs an invalidation that ran in between: one that
/// ended after the earlier lease's `called` and began before the later one's `start`.
fn overlapping_loads(events: &Events) -> Vec<String> {
    let mut loads: HashMap<u32, Vec<&Load>> = HashMap::new();
    for l in &events.loads {
        loads.entry(l.k).or_default().push(l);
    }
    let mut violations = Vec::new();
    for (k, mut list) in loads {
        list.sort_by_key(|l| l.start);
        for (i, first) in list.iter().enumerate() {
            for second in list[i + 1..].iter().take_while(|l| l.start < first.end) {
                let between = |earlier: &Load, later: &Load| {
                    events.writes.iter().any(|w| {
                        w.k == k && w.inv_end >= earlier.called && w.inv_start <= later.start
                    })
                };
                let explained = between(first, second) || between(second, first);
                if !explained {
                    violations.push(format!("key {k}: {first:?} overlaps {second:?}"));
                }
            }
        }
    }
    violations
}

/// Check 2, and what a stale entry is allowed to be after failed invalidations.
async fn final_state(cache: &RedisServer, truth: &RedisServer, events: &Events) -> Vec<String> {
    let (mut c, mut t) = (cache.conn().await, truth.conn().await);
    let mut problems = Vec::new();
    for k in 0..KEYS {
        let truth_version: u64 = redis::cmd("GET")
            .arg(format!("truth:{k}"))
            .query_async::<Option<u64>>(&mut t)
            .await
            .unwrap()
            .unwrap_or(0);
        let key = format!("consistency:{{row:{k}}}");
        let Some(raw) = cached_redis_tests::get_raw(&mut c, &key).await else {
            continue;
        };
        let cached: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let cached = cached["v"].as_u64().unwrap();
        let writes = || events.writes.iter().filter(move |w| w.k == k);
        let failed = writes().any(|w| !w.ok);
        let last_ok = writes()
            .filter(|w| w.ok)
            .map(|w| w.version)
            .max()
            .unwrap_or(0);
        if failed {
            let ttl = cached_redis_tests::pttl(&mut c, &key).await;
            if cached < last_ok || ttl > 30_000 {
                problems.push(format!(
                    "key {k}: cached {cached}, last invalidated write {last_ok}, ttl {ttl}"
                ));
            }
        } else if cached != truth_version {
            problems.push(format!("key {k}: cached {cached}, truth {truth_version}"));
        }
    }
    problems
}

fn summary(name: &str, seed: u64, events: &Events) {
    let failed = events.writes.iter().filter(|w| !w.ok).count();
    println!(
        "{name} (seed {seed}): {PROCESSES} processes x {TASKS} tasks, {} reads, {} writes ({failed} invalidations failed), {} loads",
        events.reads.len(),
        events.writes.len(),
        events.loads.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_go_back_in_time_and_loads_never_overlap() {
    let seed = env_u64("CACHED_REDIS_CHECK_SEED", 20261122);
    let (mut cache, truth) = (RedisServer::start(), RedisServer::start());
    let (events, _) = run(&mut cache, &truth, seed, Mode::Healthy).await;
    summary("healthy", seed, &events);
    assert!(
        events.reads.len() > 300 && events.writes.len() > 30,
        "too little happened"
    );
    assert!(
        events.writes.iter().all(|w| w.ok),
        "healthy Redis: every invalidation succeeds"
    );
    assert_eq!(
        events.redis_errors, 0,
        "healthy Redis: no call failed or timed out"
    );
    let stale = reads_after_invalidation(&events);
    assert!(
        stale.is_empty(),
        "{} stale reads, e.g. {:?}",
        stale.len(),
        &stale[..stale.len().min(3)]
    );
    let overlaps = overlapping_loads(&events);
    assert!(
        overlaps.is_empty(),
        "{} overlapping loads, e.g. {:?}",
        overlaps.len(),
        &overlaps[..overlaps.len().min(3)]
    );
    let problems = final_state(&cache, &truth, &events).await;
    assert!(problems.is_empty(), "{problems:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_restarts_failed_invalidations_are_reported_and_staleness_is_bounded() {
    let seed = env_u64("CACHED_REDIS_CHECK_SEED", 20261122) + 1000;
    let (mut cache, truth) = (RedisServer::start(), RedisServer::start());
    let (events, outages) = run(&mut cache, &truth, seed, Mode::Restarts).await;
    summary("with restarts", seed, &events);
    assert!(outages > 0);
    let untroubled = events.reads.iter().filter(|r| !r.troubled).count();
    assert!(
        untroubled > 100,
        "reads between the outages are checked: {untroubled}"
    );
    assert!(
        events.writes.iter().any(|w| !w.ok),
        "writers are told when an invalidation could not reach Redis"
    );
    let stale = reads_after_invalidation(&events);
    assert!(
        stale.is_empty(),
        "{} stale reads outside outages, e.g. {:?}",
        stale.len(),
        &stale[..stale.len().min(3)]
    );
    let problems = final_state(&cache, &truth, &events).await;
    assert!(problems.is_empty(), "{problems:?}");
}

/// Check 1 to 3 with reads through a function with `stale` and early refresh, whose refreshes
/// run in the background: served-stale entries and refreshes are among the reads, and none
/// of them goes back in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_stale_and_early_refresh_reads_never_go_back_in_time() {
    let seed = env_u64("CACHED_REDIS_CHECK_SEED", 20261122) + 3000;
    let (mut cache, truth) = (RedisServer::start(), RedisServer::start());
    let (events, _) = run(&mut cache, &truth, seed, Mode::Fresh).await;
    summary("stale and early refresh", seed, &events);
    println!(
        "  {} calls answered stale, {} refreshes",
        events.stale_served, events.refreshes
    );
    assert!(
        events.reads.len() > 300 && events.writes.len() > 30,
        "too little happened"
    );
    assert!(
        events.stale_served > 0 && events.refreshes > 0,
        "entries were served stale and refreshed"
    );
    assert!(events.writes.iter().all(|w| w.ok));
    assert_eq!(events.redis_errors, 0);
    assert_none("stale reads", &reads_after_invalidation(&events));
    assert_none("overlapping loads", &overlapping_loads(&events));
    assert_none("entries off", &final_state(&cache, &truth, &events).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_reads_never_go_back_in_time() {
    let seed = env_u64("CACHED_REDIS_CHECK_SEED", 20261122) + 4000;
    let (mut cache, truth) = (RedisServer::start(), RedisServer::start());
    let (events, _) = run(&mut cache, &truth, seed, Mode::Batch).await;
    summary("batch reads", seed, &events);
    assert!(
        events.reads.len() > 300 && events.writes.len() > 30,
        "too little happened"
    );
    assert!(events.writes.iter().all(|w| w.ok));
    assert_eq!(events.redis_errors, 0);
    assert_none("stale reads", &reads_after_invalidation(&events));
    assert_none("overlapping loads", &overlapping_loads(&events));
    assert_none("entries off", &final_state(&cache, &truth, &events).await);
}

/// Fails with the first few of `found`, if any.
fn assert_none(what: &str, found: &[String]) {
    assert!(
        found.is_empty(),
        "{} {what}, e.g. {:?}",
        found.len(),
        &found[..found.len().min(3)]
    );
}

/// Prints how late the reads allowed by check 1' were.
fn print_lags(mut lags_us: Vec<u64>) {
    lags_us.sort_unstable();
    let at = |percent: usize| lags_us.get(lags_us.len() * percent / 100);
    let ms = |us: Option<&u64>| us.map_or(0.0, |&us| us as f64 / 1000.0);
    println!(
        "  reads in another process that saw an older version within the {NEAR_LAG:?} lag (allowed): {}, lag p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lags_us.len(),
        ms(at(50)),
        ms(at(99)),
        ms(lags_us.last()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_near_copies_another_process_lags_by_at_most_the_max_lag() {
    let seed = env_u64("CACHED_REDIS_CHECK_SEED", 20261122) + 2000;
    let (mut cache, truth) = (RedisServer::start(), RedisServer::start());
    let (events, stalls) = run(&mut cache, &truth, seed, Mode::Near).await;
    summary("near", seed, &events);
    println!("  {stalls} stalls: a worker stopped for {STALL:?}, its tracking connection held");
    assert!(stalls > 0, "a worker was stalled");
    assert!(
        events.reads.len() > 300 && events.writes.len() > 30,
        "too little happened"
    );
    assert!(
        events.writes.iter().all(|w| w.ok),
        "healthy Redis: every invalidation succeeds"
    );
    assert_eq!(
        events.redis_errors, 0,
        "healthy Redis: no call failed or timed out"
    );
    let near = near_reads(&events, NEAR_LAG);
    print_lags(near.lags_us);
    let counts = near_counts(&events);
    assert_none("stale reads", &near.violations);
    assert_none(
        "settled reads that missed the truth",
        &settled_reads(&events),
    );
    assert_none("near hit counts off", &counts);
    assert_none("overlapping loads", &overlapping_loads(&events));
    assert_none("entries off", &final_state(&cache, &truth, &events).await);
}
