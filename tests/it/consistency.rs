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
//! Seeded and reproducible: `CACHED_REDIS_CHECK_SEED` picks the seed, and
//! `CACHED_REDIS_CHECK_MILLIS` runs it longer than the CI budget.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use cached_redis_tests::RedisServer;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Read {
    k: u32,
    start: u64,
    version: u64,
    /// A call in the same process had Redis trouble while this read ran, so it may not have
    /// reached Redis.
    troubled: bool,
}

#[derive(Debug, Deserialize)]
struct Write {
    k: u32,
    version: u64,
    inv_start: u64,
    inv_end: u64,
    ok: bool,
}

#[derive(Debug, Deserialize)]
struct Load {
    k: u32,
    /// When the call that ran this load began: it took the lease after this.
    called: u64,
    start: u64,
    end: u64,
}

#[derive(Debug, Default, Deserialize)]
struct Events {
    reads: Vec<Read>,
    writes: Vec<Write>,
    loads: Vec<Load>,
    /// Redis calls that failed or timed out, over all workers.
    redis_errors: u64,
}

const KEYS: u32 = 6;
const PROCESSES: u32 = 3;
const TASKS: u32 = 6;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the workers; with `restarts`, kills and restarts the cache's Redis during the run and
/// returns how many times it did.
async fn run(
    cache: &mut RedisServer,
    truth: &RedisServer,
    seed: u64,
    restarts: bool,
) -> (Events, usize) {
    // With restarts, calls must give up on a dead Redis quickly; on a healthy one, no call may
    // time out even on a loaded machine, since check 3 holds only while Redis answers.
    let op_timeout_ms = if restarts { 100 } else { 5_000 };
    let millis = env_u64("CACHED_REDIS_CHECK_MILLIS", 2500);
    let workers: Vec<_> = (0..PROCESSES)
        .map(|p| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_consistency-worker"))
                .args([
                    cache.url(),
                    truth.url(),
                    (seed + u64::from(p)).to_string(),
                    TASKS.to_string(),
                    millis.to_string(),
                    KEYS.to_string(),
                    op_timeout_ms.to_string(),
                ])
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    let mut outages = 0;
    if restarts {
        let end = std::time::Instant::now() + Duration::from_millis(millis);
        tokio::time::sleep(Duration::from_millis(400)).await;
        while std::time::Instant::now() + Duration::from_millis(300) < end {
            cache.kill();
            tokio::time::sleep(Duration::from_millis(150)).await;
            cache.restart();
            outages += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let mut events = Events::default();
    for worker in workers {
        let output = worker.wait_with_output().await.unwrap();
        assert!(output.status.success(), "a worker failed");
        let part: Events = serde_json::from_slice(&output.stdout).expect("worker events");
        events.reads.extend(part.reads);
        events.writes.extend(part.writes);
        events.loads.extend(part.loads);
        events.redis_errors += part.redis_errors;
    }
    (events, outages)
}

/// Check 1. Returns the violations among the reads that had no Redis trouble.
fn reads_after_invalidation(events: &Events) -> Vec<String> {
    let mut writes: HashMap<u32, Vec<&Write>> = HashMap::new();
    for w in events.writes.iter().filter(|w| w.ok) {
        writes.entry(w.k).or_default().push(w);
    }
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
    let (events, _) = run(&mut cache, &truth, seed, false).await;
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
    let (events, outages) = run(&mut cache, &truth, seed, true).await;
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
