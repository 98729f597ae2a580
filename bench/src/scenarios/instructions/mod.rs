//! Scenario 12: instructions per call, counted by callgrind in a child process that makes a
//! fixed number of calls of one warm key: the difference between two call counts, divided by
//! the difference in calls, leaves out start-up, connections and warm-up. Redis runs in its own
//! process, outside valgrind: only the client's instructions are counted.

mod child;

use std::path::Path;
use std::process::Stdio;

use crate::report::{Spread, Table, ratio};
use crate::systems::System;

use super::Config;

pub(crate) use child::instructions_child;

/// The two call counts whose difference is measured.
const CALLS: (u64, u64) = (2_000, 12_000);

/// The same for the miss probes, whose calls are slower: each writes, and one of them makes
/// ten Redis calls.
const MISS_CALLS: (u64, u64) = (200, 1_200);

/// How many hits of a warm key come before each miss of [`Probe::MissAmongHits`].
const HITS_PER_MISS: u64 = 9;

/// What one child measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    Raw,
    HandWritten,
    RedisHit,
    NearHit,
    NearHitOwned,
    Loader,
    BreakerOpen,
    /// Hand-written: a miss of a new key each call (`GET`, load, `SET`).
    HandWrittenMiss,
    /// cached-redis: a miss of a new key each call; its function's calls keep missing, so
    /// they start with the lease script.
    Miss,
    /// cached-redis: nine hits of a warm key, then a miss of a new key, each call; the row is
    /// the call less nine of the Redis-hit row's.
    MissAmongHits,
}

impl Probe {
    const ALL: [Probe; 10] = [
        Probe::Raw,
        Probe::HandWritten,
        Probe::RedisHit,
        Probe::NearHit,
        Probe::NearHitOwned,
        Probe::Loader,
        Probe::BreakerOpen,
        Probe::HandWrittenMiss,
        Probe::Miss,
        Probe::MissAmongHits,
    ];

    /// Its name on the child's command line.
    fn name(self) -> &'static str {
        match self {
            Probe::Raw => "raw",
            Probe::HandWritten => "hand-written",
            Probe::RedisHit => "redis-hit",
            Probe::NearHit => "near-hit",
            Probe::NearHitOwned => "near-hit-owned",
            Probe::Loader => "loader",
            Probe::BreakerOpen => "breaker-open",
            Probe::HandWrittenMiss => "hand-written-miss",
            Probe::Miss => "miss",
            Probe::MissAmongHits => "miss-among-hits",
        }
    }

    fn parse(name: &str) -> Option<Probe> {
        Probe::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Its row in the table.
    fn label(self) -> &'static str {
        match self {
            Probe::Raw => "raw: GET + decode",
            Probe::HandWritten => "hand-written: hit",
            Probe::RedisHit => "cached-redis: Redis hit",
            Probe::NearHit => "cached-redis near: near hit (`Arc<Payload>`)",
            Probe::NearHitOwned => "cached-redis near: near hit (`Payload` by value, cloned)",
            Probe::Loader => "the loader alone (returns a `u64`)",
            Probe::BreakerOpen => "cached-redis: breaker open (Redis refused), over the loader",
            Probe::HandWrittenMiss => "hand-written: miss (`GET`, load, `SET`)",
            Probe::Miss => "cached-redis: miss, calls that keep missing (lease script, write-back)",
            Probe::MissAmongHits => {
                "cached-redis: miss among hits (`GET`, `SET NX` + `GET`, write-back), less nine hits"
            }
        }
    }

    /// What the child's count of intended calls counts, if it has one.
    fn counts(self) -> Option<&'static str> {
        match self {
            Probe::RedisHit => Some("Redis hits"),
            Probe::NearHit | Probe::NearHitOwned => Some("near hits"),
            Probe::BreakerOpen => Some("calls that skipped Redis"),
            Probe::Miss | Probe::MissAmongHits => Some("misses"),
            Probe::Raw | Probe::HandWritten | Probe::Loader | Probe::HandWrittenMiss => None,
        }
    }

    /// The benchmark system whose warm-up it uses.
    fn system(self) -> Option<System> {
        match self {
            Probe::Raw => Some(System::Raw),
            Probe::HandWritten | Probe::HandWrittenMiss => Some(System::HandWritten),
            Probe::RedisHit | Probe::Miss | Probe::MissAmongHits => Some(System::CachedRedis),
            Probe::NearHit => Some(System::CachedRedisNear),
            Probe::NearHitOwned | Probe::Loader | Probe::BreakerOpen => None,
        }
    }

    /// The two call counts whose difference it measures.
    fn calls(self) -> (u64, u64) {
        match self {
            Probe::HandWrittenMiss | Probe::Miss | Probe::MissAmongHits => MISS_CALLS,
            _ => CALLS,
        }
    }
}

/// One child run under callgrind: instructions in total, and the calls it answered as meant.
struct Run {
    instructions: u64,
    intended: Option<i64>,
}

/// Runs the child for `probe` with `calls` calls under callgrind.
async fn under_callgrind(cfg: &Config, probe: Probe, calls: u64) -> Result<Run, String> {
    let out = std::env::temp_dir().join(format!(
        "bench-callgrind.{}.{}.{calls}",
        std::process::id(),
        probe.name()
    ));
    let output = tokio::process::Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(&cfg.exe)
        .args([
            "instructions-child",
            probe.name(),
            &calls.to_string(),
            &cfg.url,
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("valgrind: {e}"))?;
    let instructions = total_instructions(&out);
    let _ = std::fs::remove_file(&out);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!("{} failed: {}", probe.name(), tail.join(" / ")));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("child's report: {e}"))?;
    Ok(Run {
        instructions: instructions.ok_or("no total in callgrind's output")?,
        intended: report["intended"].as_i64(),
    })
}

/// The total `Ir` of a callgrind output file.
fn total_instructions(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
}

/// Whether `valgrind` can be run.
async fn valgrind_present() -> bool {
    tokio::process::Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Scenario 12: instructions per call of each probe, from two call counts under callgrind.
pub(super) async fn instructions(cfg: &Config) -> Table {
    let mut table = Table::new(
        "12. Instructions per call (callgrind; the client process only), one warm ~1 KB key",
        &[
            "call",
            "instructions per call",
            "vs raw",
            "answered as meant",
        ],
    );
    if !valgrind_present().await {
        table.note = "Skipped: `valgrind` was not found.".into();
        eprintln!("instructions: valgrind was not found; skipped");
        return table;
    }
    let rounds = cfg.rounds.min(2);
    let mut per_call = vec![Vec::new(); Probe::ALL.len()];
    let mut checks = vec![String::new(); Probe::ALL.len()];
    for round in 0..rounds {
        let mut order = Probe::ALL.to_vec();
        order.rotate_left(round % Probe::ALL.len());
        for probe in order {
            let (n, check) = per_call_of(cfg, probe).await;
            per_call[probe as usize].push(n);
            checks[probe as usize] = check;
        }
    }
    rows(&mut table, &per_call, &checks);
    table.note = format!(
        "(instructions at {} calls − instructions at {} calls) / {} per probe, medians of {rounds} rounds; each child is `bench instructions-child <probe> <calls> <url>` on a current-thread runtime under `valgrind --tool=callgrind`, and makes 50 calls before those counted. Time-driven work is kept out (callgrind slows the child about fifty times, not its timers): the near probes' cache has `near_max_lag` 60 s (a heartbeat every 12 s) and the breaker probe's cooldown is 10 minutes. The breaker row is its calls less the loader's; its cache points at a port that refuses connections, its breaker opened by the 50 calls before. The miss rows count {} − {} calls, each a miss of a key not read before: their loader builds the ~1 KB value, and the write-back cached-redis runs after its caller is answered is counted (it runs on the child's one thread); the miss-among-hits row's calls are nine hits of a warm key and then the miss, less nine of the Redis-hit row.",
        CALLS.1,
        CALLS.0,
        CALLS.1 - CALLS.0,
        MISS_CALLS.1,
        MISS_CALLS.0,
    );
    table
}

/// Instructions per call of `probe`, and what the bigger run says of its calls.
async fn per_call_of(cfg: &Config, probe: Probe) -> (f64, String) {
    let calls = probe.calls();
    let (small, big) = match (
        under_callgrind(cfg, probe, calls.0).await,
        under_callgrind(cfg, probe, calls.1).await,
    ) {
        (Ok(small), Ok(big)) => (small, big),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("instructions: {e}");
            return (f64::NAN, format!("failed: {e}"));
        }
    };
    let n = (big.instructions as f64 - small.instructions as f64) / (calls.1 - calls.0) as f64;
    let check = match (probe.counts(), small.intended, big.intended) {
        (Some(what), Some(a), Some(b)) => {
            format!("{a} of {} and {b} of {} {what}", calls.0, calls.1)
        }
        _ => "–".to_owned(),
    };
    (n, check)
}

/// One row per probe; the breaker's is net of the loader's, and a miss among hits net of
/// nine Redis hits, round by round.
fn rows(table: &mut Table, per_call: &[Vec<f64>], checks: &[String]) {
    let raw = Spread::of(&per_call[Probe::Raw as usize]).median;
    let loader = &per_call[Probe::Loader as usize];
    let hit = &per_call[Probe::RedisHit as usize];
    for probe in Probe::ALL {
        let mut samples = per_call[probe as usize].clone();
        let less = match probe {
            Probe::BreakerOpen => Some((loader, 1.0)),
            Probe::MissAmongHits => Some((hit, HITS_PER_MISS as f64)),
            _ => None,
        };
        if let Some((less, times)) = less {
            for (n, l) in samples.iter_mut().zip(less) {
                *n -= l * times;
            }
        }
        let n = Spread::of(&samples);
        table.rows.push(vec![
            probe.label().to_owned(),
            n.show(0),
            ratio(n.median, raw),
            checks[probe as usize].clone(),
        ]);
    }
}
