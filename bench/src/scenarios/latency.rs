//! Scenario 1: the latency of a hit, one call at a time.

use std::time::Instant;

use crate::per_system::Samples;
use crate::report::{Spread, Table, quantile, ratio};
use crate::systems::{self, System};

use super::{Config, VALUE, micros, rotated};

/// Scenario 1: one task reading one warm key, p50 and p99 per call.
pub(super) async fn hit_latency(cfg: &Config) -> Table {
    let iters = 3_000;
    for s in System::ALL {
        systems::warm(s, 1, VALUE).await;
    }
    let mut p50 = Samples::default();
    let mut p99 = Samples::default();
    for round in 0..cfg.rounds {
        for s in rotated(System::ALL, round) {
            systems::ready(s, 1, VALUE).await;
            let mut lat = Vec::with_capacity(iters);
            for _ in 0..iters {
                let started = Instant::now();
                systems::get(s, 1, VALUE, 0).await.expect("hit");
                lat.push(micros(started.elapsed()));
            }
            lat.sort_by(f64::total_cmp);
            p50[s].push(quantile(&lat, 0.5));
            p99[s].push(quantile(&lat, 0.99));
        }
    }
    let mut table = Table::new(
        "1. Hit latency, one task, ~1 KB value (µs per call)",
        &["system", "p50 µs", "p99 µs", "p50 vs raw", "p99 vs raw"],
    );
    let (raw50, raw99) = (
        Spread::of(&p50[System::Raw]).median,
        Spread::of(&p99[System::Raw]).median,
    );
    for s in System::ALL {
        let (a, b) = (Spread::of(&p50[s]), Spread::of(&p99[s]));
        table.rows.push(vec![
            s.name().into(),
            a.show(1),
            b.show(1),
            ratio(a.median, raw50),
            ratio(b.median, raw99),
        ]);
    }
    table.note = format!(
        "{iters} sequential calls per system per round; {} rounds.",
        cfg.rounds
    );
    table
}
