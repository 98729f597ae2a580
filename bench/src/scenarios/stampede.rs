//! Scenario 5: a stampede of 1,000 callers over 4 OS processes on one cold key, through the
//! stampede protocol the tests' child processes speak too.

use std::sync::atomic::Ordering;

use crate::per_system::Samples;
use crate::report::{Spread, Table, quantile};
use crate::systems::{self, LOADS, System};

use super::{Config, VALUE, rotated};

/// Scenario 5: 1,000 callers over 4 OS processes on one cold key, loader 100 ms.
pub(super) async fn stampede(cfg: &Config) -> Table {
    let (processes, per_process, loader_ms) = (4, 250, 100);
    let mut loads = Samples::default();
    let mut p50 = Samples::default();
    let mut p99 = Samples::default();
    for round in 0..cfg.rounds {
        for s in rotated(System::LOADING, round) {
            let id = 500_000_000 + 1_000 * round as u64 + s as u64;
            let commands = (0..processes).map(|_| {
                let mut child = tokio::process::Command::new(&cfg.exe);
                let (id, tasks, ms) = (
                    id.to_string(),
                    per_process.to_string(),
                    loader_ms.to_string(),
                );
                child.args(["stampede-child", s.name(), &cfg.url, &id, &tasks, &ms]);
                child
            });
            let reports = cached_redis_tests::release_together(commands.collect()).await;
            let mut lat: Vec<f64> = reports
                .iter()
                .flat_map(|r| r.latencies_ms.clone())
                .collect();
            lat.sort_by(f64::total_cmp);
            loads[s].push(reports.iter().map(|r| r.loads as f64).sum());
            p50[s].push(quantile(&lat, 0.5));
            p99[s].push(quantile(&lat, 0.99));
        }
    }
    let mut table = Table::new(
        "5. Stampede: 1,000 callers over 4 OS processes, one cold key, 100 ms loader",
        &["system", "loader invocations", "p50 ms", "p99 ms"],
    );
    for s in System::LOADING {
        table.rows.push(vec![
            s.name().into(),
            Spread::of(&loads[s]).show(0),
            Spread::of(&p50[s]).show(1),
            Spread::of(&p99[s]).show(1),
        ]);
    }
    table.note = format!("{} rounds, a fresh key each.", cfg.rounds);
    table
}

/// The child side of the stampede: `tasks` concurrent reads of `id` once released.
pub(crate) async fn stampede_child(system: System, id: u64, tasks: usize, loader_ms: u64) {
    let call = || async move { systems::get(system, id, VALUE, loader_ms).await.is_ok() };
    cached_redis_tests::run_when_released(tasks, || LOADS.load(Ordering::Relaxed), call).await;
}
