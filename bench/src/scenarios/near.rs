//! Scenario 10: near hits against the Redis path and against oxcache's moka L1: the latency of
//! one task's calls, and throughput at 1 to 256 tasks, on one hot key and over 1,000 keys read
//! uniformly.

use std::time::Instant;

use crate::per_system::Samples;
use crate::report::{Spread, Table, quantile, ratio};
use crate::systems::{self, System};

use super::{Config, Keys, VALUE, ops_per_second_over, rotated};

/// The keys of the uniform pattern.
const KEYS: u64 = 1_000;
/// The concurrencies of the throughput table.
const TASKS: [usize; 4] = [1, 8, 64, 256];
/// Timed calls per system per round in the latency table.
const CALLS: usize = 10_000;
/// The two key patterns, with their labels.
const PATTERNS: [(Keys, &str); 2] = [
    (Keys::Hot, "one hot key"),
    (Keys::Uniform(KEYS), "1,000 keys, uniform"),
];

/// Where a measurement starts: the near system's near hits and the reads oxcache's L1 missed.
#[derive(Debug, Clone, Copy)]
struct Marks {
    near_hits: u64,
    ox_misses: u64,
}

impl Marks {
    fn now() -> Marks {
        Marks {
            near_hits: systems::near_stats().near_hits,
            ox_misses: systems::ox_l1_misses(),
        }
    }
}

/// The lowest share of calls answered from process memory, over every measurement: the near
/// system's near hits, and oxcache's L1 hits.
struct MemoryShare {
    near: f64,
    oxcache: f64,
}

impl MemoryShare {
    /// Counts one measurement of `system`: `calls` calls, from `before` on.
    fn note(&mut self, system: System, before: Marks, calls: u64) {
        let calls = calls.max(1);
        match system {
            System::CachedRedisNear => {
                let hits = systems::near_stats().near_hits - before.near_hits;
                self.near = self.near.min(hits as f64 / calls as f64);
            }
            System::Oxcache => {
                let misses = systems::ox_l1_misses() - before.ox_misses;
                let hits = calls.saturating_sub(misses);
                self.oxcache = self.oxcache.min(hits as f64 / calls as f64);
            }
            _ => {}
        }
    }
}

/// Scenario 10: near hits against raw, hand-written, `cached`, cached-redis without near and
/// oxcache with its moka L1 in front of Redis.
pub(super) async fn near(cfg: &Config) -> Vec<Table> {
    for s in System::NEAR {
        for id in 0..KEYS {
            systems::warm(s, id, VALUE).await;
        }
    }
    let mut latency = Table::new(
        "10. Near cache: hit latency, one task, ~1 KB value (ns per call)",
        &[
            "keys",
            "system",
            "p50 ns",
            "p99 ns",
            "p50 vs raw",
            "p99 vs raw",
        ],
    );
    let mut headers = vec!["keys", "system"];
    for tasks in ["1 task", "8 tasks", "64 tasks", "256 tasks"] {
        headers.extend([tasks, "vs raw"]);
    }
    let mut throughput = Table::new(
        "11. Near cache: hit throughput against concurrency, ~1 KB value (ops/s)",
        &headers,
    );
    let mut share = MemoryShare {
        near: 1.0,
        oxcache: 1.0,
    };
    let rounds = cfg.rounds.min(3);
    for (keys, label) in PATTERNS {
        latency_rows(rounds, keys, label, &mut latency, &mut share).await;
        throughput_rows(rounds, cfg.secs, keys, label, &mut throughput, &mut share).await;
    }
    latency.note = format!(
        "{CALLS} sequential calls per system per round, each timed with two clock reads (an empty timing measures {:.0} ns at the median, included); {rounds} rounds. \"cached-redis near\" is `near = \"5s\"` on a cache built with `.near_cache(10_000)`, values as `Arc<Payload>`; before each of its measurements every key was read until it was a near hit. Lowest share of its calls that were near hits, over every measurement of both tables: {:.4}. \"oxcache (moka L1 + Redis)\" is oxcache 0.5.0-rc.1 read with `Cache::get_or`: a `ChainCache` of a moka L1 (10,000 entries, 5 s TTL) and its Redis backend, backfilling the L1 from Redis, entries kept 10 minutes; its L1 holds the JSON, so each hit copies and decodes it. Before each of its measurements every key was read once, which puts it in the L1. Lowest share of its calls answered by the L1 (its backfills from Redis and the loads counted as misses), over every measurement of both tables: {:.4}. What oxcache does not keep coherent: nothing invalidates its L1 from outside the process (0.5.0-rc.1 subscribes to no channel and uses no client tracking), so another process's write is not seen until the copy's 5 s TTL runs out, and a read that finds the value in Redis writes it back to the L1 unconditionally, so a write that lands between that read's GET and its backfill is overwritten in the L1 by the older value, again for up to 5 s.",
        clock_overhead(),
        share.near,
        share.oxcache
    );
    throughput.note = format!(
        "Medians of {rounds} rounds of {:.1} s per cell; \"vs raw\" is the ratio to raw at the same concurrency and keys.",
        cfg.secs
    );
    vec![latency, throughput]
}

/// Makes every key of `keys` a near hit again before the near system is measured, and an L1
/// hit before oxcache is.
async fn ready(system: System, keys: Keys) {
    let n = match keys {
        Keys::Uniform(n) | Keys::PerTask(n) => n,
        Keys::Hot => 1,
    };
    for id in 0..n {
        systems::ready(system, id, VALUE).await;
    }
}

/// `CALLS` calls of one task on `keys`, each timed: nanoseconds, sorted.
async fn one_task(system: System, keys: Keys) -> Vec<f64> {
    let mut next = keys.ids(0);
    let mut lat = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let id = next();
        let started = Instant::now();
        systems::get(system, id, VALUE, 0).await.expect("hit");
        lat.push(started.elapsed().as_nanos() as f64);
    }
    lat.sort_by(f64::total_cmp);
    lat
}

async fn latency_rows(
    rounds: usize,
    keys: Keys,
    label: &str,
    table: &mut Table,
    share: &mut MemoryShare,
) {
    let (mut p50, mut p99) = (Samples::default(), Samples::default());
    for round in 0..rounds {
        for s in rotated(System::NEAR, round) {
            ready(s, keys).await;
            let before = Marks::now();
            let lat = one_task(s, keys).await;
            share.note(s, before, CALLS as u64);
            p50[s].push(quantile(&lat, 0.5));
            p99[s].push(quantile(&lat, 0.99));
        }
    }
    let raw50 = Spread::of(&p50[System::Raw]).median;
    let raw99 = Spread::of(&p99[System::Raw]).median;
    for s in System::NEAR {
        let (a, b) = (Spread::of(&p50[s]), Spread::of(&p99[s]));
        table.rows.push(vec![
            label.to_owned(),
            s.name().into(),
            a.show(0),
            b.show(0),
            ratio(a.median, raw50),
            ratio(b.median, raw99),
        ]);
    }
}

async fn throughput_rows(
    rounds: usize,
    secs: f64,
    keys: Keys,
    label: &str,
    table: &mut Table,
    share: &mut MemoryShare,
) {
    let mut cells: Vec<Samples> = vec![Samples::default(); TASKS.len()];
    for (t, tasks) in TASKS.into_iter().enumerate() {
        for round in 0..rounds {
            for s in rotated(System::NEAR, round) {
                ready(s, keys).await;
                let before = Marks::now();
                let rate = ops_per_second_over(keys, tasks, secs, move |id| async move {
                    systems::get(s, id, VALUE, 0).await.expect("hit");
                })
                .await;
                share.note(s, before, rate.ops);
                cells[t][s].push(rate.per_second);
            }
        }
    }
    for s in System::NEAR {
        let mut row = vec![label.to_owned(), s.name().to_owned()];
        for cell in &cells {
            let (ours, raw) = (Spread::of(&cell[s]), Spread::of(&cell[System::Raw]));
            row.push(format!("{:.0}", ours.median));
            row.push(ratio(ours.median, raw.median));
        }
        table.rows.push(row);
    }
}

/// The median of an empty timing (two clock reads), in nanoseconds.
fn clock_overhead() -> f64 {
    let mut lat: Vec<f64> = (0..10_000)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(started.elapsed().as_nanos() as f64)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    quantile(&lat, 0.5)
}
