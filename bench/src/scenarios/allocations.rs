//! Scenario 7: heap allocations per hit, counted by the benchmark's global allocator.

use crate::per_system::Samples;
use crate::report::{Spread, Table, ratio};
use crate::systems::{self, System};

use super::{Config, VALUE, rotated};

/// Scenario 7: heap allocations per hit (a counting global allocator).
pub(super) async fn allocations(cfg: &Config) -> Table {
    let n = 10_000u64;
    for s in System::ALL {
        systems::warm(s, 1, VALUE).await;
    }
    let mut per_hit = Samples::default();
    for round in 0..cfg.rounds {
        for s in rotated(System::ALL, round) {
            systems::ready(s, 1, VALUE).await;
            let before = crate::alloc::allocations();
            for _ in 0..n {
                systems::get(s, 1, VALUE, 0).await.expect("hit");
            }
            per_hit[s].push((crate::alloc::allocations() - before) as f64 / n as f64);
        }
    }
    let mut table = Table::new(
        "7. Heap allocations per hit (~1 KB value)",
        &["system", "allocations", "vs raw"],
    );
    let raw = Spread::of(&per_hit[System::Raw]).median;
    for s in System::ALL {
        let a = Spread::of(&per_hit[s]);
        table
            .rows
            .push(vec![s.name().into(), a.show(1), ratio(a.median, raw)]);
    }
    table.note = format!(
        "{n} sequential hits per system per round, counted across all threads of the process."
    );
    table
}
