//! Scenario 10: near hits against the Redis path: the latency of one task's calls, and
//! throughput at 1 to 256 tasks, on one hot key and over 1,000 keys read uniformly.

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

/// The lowest share of the near system's calls that were near hits, over every measurement.
struct NearShare(f64);

impl NearShare {
    /// Counts one measurement of the near system: `calls` calls, from `before`'s near hits on.
    fn note(&mut self, before: u64, calls: u64) {
        let hits = systems::near_stats().near_hits - before;
        self.0 = self.0.min(hits as f64 / calls.max(1) as f64);
    }
}

/// Scenario 10: near hits against raw, hand-written, `cached` and cached-redis without near.
pub(super) async fn near(cfg: &Config) -> Vec<Table> {
    for s in System::ALL {
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
    let mut share = NearShare(1.0);
    let rounds = cfg.rounds.min(3);
    for (keys, label) in PATTERNS {
        latency_rows(rounds, keys, label, &mut latency, &mut share).await;
        throughput_rows(rounds, cfg.secs, keys, label, &mut throughput, &mut share).await;
    }
    latency.note = format!(
        "{CALLS} sequential calls per system per round, each timed with two clock reads (an empty timing measures {:.0} ns at the median, included); {rounds} rounds. \"cached-redis near\" is `near = \"5s\"` on a cache built with `.near_cache(10_000)`, values as `Arc<Payload>`; before each of its measurements every key was read until it was a near hit. Lowest share of its calls that were near hits, over every measurement of both tables: {:.4}.",
        clock_overhead(),
        share.0
    );
    throughput.note = format!(
        "Medians of {rounds} rounds of {:.1} s per cell; \"vs raw\" is the ratio to raw at the same concurrency and keys.",
        cfg.secs
    );
    vec![latency, throughput]
}

/// Makes every key of `keys` a near hit again before the near system is measured.
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
    share: &mut NearShare,
) {
    let (mut p50, mut p99) = (Samples::default(), Samples::default());
    for round in 0..rounds {
        for s in rotated(System::ALL, round) {
            ready(s, keys).await;
            let before = systems::near_stats().near_hits;
            let lat = one_task(s, keys).await;
            if s == System::CachedRedisNear {
                share.note(before, CALLS as u64);
            }
            p50[s].push(quantile(&lat, 0.5));
            p99[s].push(quantile(&lat, 0.99));
        }
    }
    let raw50 = Spread::of(&p50[System::Raw]).median;
    let raw99 = Spread::of(&p99[System::Raw]).median;
    for s in System::ALL {
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
    share: &mut NearShare,
) {
    let mut cells: Vec<Samples> = vec![Samples::default(); TASKS.len()];
    for (t, tasks) in TASKS.into_iter().enumerate() {
        for round in 0..rounds {
            for s in rotated(System::ALL, round) {
                ready(s, keys).await;
                let before = systems::near_stats().near_hits;
                let rate = ops_per_second_over(keys, tasks, secs, move |id| async move {
                    systems::get(s, id, VALUE, 0).await.expect("hit");
                })
                .await;
                if s == System::CachedRedisNear {
                    share.note(before, rate.ops);
                }
                cells[t][s].push(rate.per_second);
            }
        }
    }
    for s in System::ALL {
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
