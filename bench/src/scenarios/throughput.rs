//! Scenarios 2 and 3: hit throughput, at 64 tasks with Redis's CPU time per operation, and
//! against concurrency and value size (a table and a plot).

use crate::per_system::Samples;
use crate::plot::{Series, svg};
use crate::report::{Spread, Table, ratio};
use crate::systems::{self, System};

use super::{Config, VALUE, ops_per_second, rotated};

/// Reads Redis's own CPU time (user + system), in seconds.
async fn redis_cpu(conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .unwrap_or_default();
    info.lines()
        .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum()
}

/// `tasks` tasks reading 16 warm keys of `size` bytes for `secs`: operations per second.
async fn throughput(system: System, tasks: usize, size: usize, secs: f64) -> f64 {
    for id in 0..16 {
        systems::ready(system, id, size).await;
    }
    ops_per_second(tasks, secs, move |id| async move {
        systems::get(system, id, size, 0).await.expect("hit");
    })
    .await
}

async fn warm_keys(size: usize) {
    for s in System::ALL {
        for id in 0..16 {
            systems::warm(s, id, size).await;
        }
    }
}

/// Scenario 2: 64 tasks on warm ~1 KB keys: ops/s, and Redis's CPU time per operation.
pub(super) async fn hit_throughput(cfg: &Config) -> Table {
    warm_keys(VALUE).await;
    let mut admin = redis::Client::open(cfg.url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    let mut ops = Samples::default();
    let mut cpu = Samples::default();
    for round in 0..cfg.rounds {
        for s in rotated(System::ALL, round) {
            let cpu_before = redis_cpu(&mut admin).await;
            let rate = throughput(s, 64, VALUE, cfg.secs).await;
            let cpu_used = redis_cpu(&mut admin).await - cpu_before;
            ops[s].push(rate);
            cpu[s].push(cpu_used * 1e6 / (rate * cfg.secs));
        }
    }
    let mut table = Table::new(
        "2. Hit throughput, 64 tasks, ~1 KB values",
        &["system", "ops/s", "vs raw", "Redis CPU µs per op"],
    );
    let raw = Spread::of(&ops[System::Raw]).median;
    for s in System::ALL {
        let rate = Spread::of(&ops[s]);
        table.rows.push(vec![
            s.name().into(),
            rate.show(0),
            ratio(rate.median, raw),
            Spread::of(&cpu[s]).show(2),
        ]);
    }
    table.note = format!(
        "{:.1} s per system per round; {} rounds. Redis CPU is the server's user+system time over the run divided by the operations.",
        cfg.secs, cfg.rounds
    );
    table
}

/// Scenario 3: throughput against concurrency and value size; a table and a plot.
pub(super) async fn matrix(cfg: &Config) -> (Table, String) {
    let sizes = [(100, "100 B"), (10_000, "10 KB"), (1_000_000, "1 MB")];
    let concurrency = [1, 8, 64, 256];
    let secs = (cfg.secs / 2.0).max(0.2);
    let rounds = cfg.rounds.min(3);
    let mut headers = vec!["value", "tasks"];
    headers.extend(System::ALL.map(System::name));
    headers.extend(["cached-redis vs raw", "cached-redis near vs raw"]);
    let mut table = Table::new(
        "3. Hit throughput against concurrency and value size (ops/s)",
        &headers,
    );
    let mut panels = Vec::new();
    for (size, label) in sizes {
        warm_keys(size).await;
        let mut lines = Samples::default();
        for tasks in concurrency {
            let mut cell = Samples::default();
            for round in 0..rounds {
                for s in rotated(System::ALL, round) {
                    cell[s].push(throughput(s, tasks, size, secs).await);
                }
            }
            let mut row = vec![label.to_owned(), tasks.to_string()];
            for s in System::ALL {
                let median = Spread::of(&cell[s]).median;
                row.push(format!("{median:.0}"));
                lines[s].push(median);
            }
            let raw = Spread::of(&cell[System::Raw]).median;
            for ours in [System::CachedRedis, System::CachedRedisNear] {
                row.push(ratio(Spread::of(&cell[ours]).median, raw));
            }
            table.rows.push(row);
        }
        let series = System::ALL
            .into_iter()
            .map(|s| Series {
                name: s.name().to_owned(),
                points: lines[s].clone(),
            })
            .collect();
        panels.push((label.to_owned(), series));
    }
    table.note = format!("Medians of {rounds} rounds of {secs:.1} s per cell.");
    let labels: Vec<String> = concurrency.iter().map(ToString::to_string).collect();
    let plot = svg(
        "Hit throughput: cached-redis against the alternatives",
        &labels,
        &panels,
    );
    (table, plot)
}
