//! Scenario 4: the miss path, cold keys with an instant loader: latency, loads and Redis round
//! trips per miss.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::per_system::{PerSystem, Samples};
use crate::report::{Spread, Table, quantile};
use crate::systems::{self, LOADS, System};

use super::{Config, VALUE, micros, rotated};

/// Counts the client commands (not those a script runs) that reach Redis while `work` runs,
/// by reading `MONITOR` up to a marker.
pub(super) async fn client_commands<F: std::future::Future<Output = ()>>(
    cfg: &Config,
    marker: &str,
    work: F,
) -> u64 {
    let port = cfg.url.rsplit(':').next().expect("port");
    let mut monitor = tokio::process::Command::new("redis-cli")
        .args(["-p", port, "monitor"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-cli monitor (install redis-tools)");
    let mut lines = BufReader::new(monitor.stdout.take().expect("stdout")).lines();
    assert_eq!(
        lines.next_line().await.expect("monitor").as_deref(),
        Some("OK")
    );
    work.await;
    let mut admin = redis::Client::open(cfg.url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin");
    let _: String = redis::cmd("ECHO")
        .arg(marker)
        .query_async(&mut admin)
        .await
        .expect("ECHO");
    let mut count = 0;
    while let Some(line) = lines.next_line().await.expect("monitor line") {
        if line.contains(marker) {
            break;
        }
        if !line.contains(" lua]") {
            count += 1;
        }
    }
    count
}

/// The round trips a miss's caller waits for: every command for the others; for cached-redis,
/// whose write-back runs after the caller is answered, the lease script alone once its
/// function's calls keep missing, the GET and the lease (`SET NX` with a `GET`) among hits.
fn waited_for(system: System) -> &'static str {
    match system {
        System::CachedRedis => {
            "1 (lease script) while calls keep missing; 2 (GET, then SET NX + GET pipelined) among hits"
        }
        _ => "2 (GET, SET)",
    }
}

/// `n` misses of `system` from key `base`, each timed: back to back, or `apart`, with the
/// system's background work (cached-redis's write-back) settled between them, untimed.
async fn timed_misses(system: System, base: u64, n: usize, apart: bool) -> Vec<f64> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let started = Instant::now();
        systems::get(system, base + i, VALUE, 0)
            .await
            .expect("miss");
        lat.push(micros(started.elapsed()));
        if apart {
            systems::clients().cache.settle().await;
        }
    }
    lat.sort_by(f64::total_cmp);
    lat
}

/// `n` misses of each of `order`'s systems from key `base`, each after nine hits of a warm key
/// and timed alone (background work settled, untimed): a function whose calls mostly hit. The
/// systems take turns miss by miss, so that they share whatever the scheduler does meanwhile
/// (which worker thread polls Redis's replies moves a round's median by half).
async fn misses_among_hits(order: Vec<System>, base: u64, n: usize) -> PerSystem<Vec<f64>> {
    let warm = base + n as u64;
    let mut lat = PerSystem::<Vec<f64>>::default();
    for &system in &order {
        systems::get(system, warm, VALUE, 0).await.expect("warm");
    }
    for i in 0..n as u64 {
        for &system in &order {
            for _ in 0..9 {
                systems::get(system, warm, VALUE, 0).await.expect("hit");
            }
            systems::clients().cache.settle().await;
            let started = Instant::now();
            systems::get(system, base + i, VALUE, 0)
                .await
                .expect("miss");
            lat[system].push(micros(started.elapsed()));
        }
    }
    for system in order {
        lat[system].sort_by(f64::total_cmp);
    }
    lat
}

/// Runs `timed` in a task of the runtime, as a request handler runs: a cached-redis miss hands
/// its write-back to the runtime, which costs a worker's wake-up when the caller is not on one
/// (`block_on`'s thread), and nothing more when it is.
async fn in_task<T: Send + 'static>(
    timed: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    tokio::spawn(timed).await.expect("timed task")
}

/// Redis commands per miss of each system, where its calls keep missing (as in the rounds):
/// the client commands Redis received (`MONITOR`) over 100 misses, after 40 not counted.
async fn commands_per_miss(cfg: &Config) -> PerSystem<f64> {
    let mut trips = PerSystem::<f64>::default();
    for s in System::LOADING {
        let m = 100;
        let base = 900_000_000 + 1_000 * s as u64;
        for i in 0..40 {
            systems::get(s, base + 500 + i, VALUE, 0)
                .await
                .expect("miss");
        }
        let commands = client_commands(cfg, &format!("marker-{}", s.name()), async {
            for i in 0..m {
                systems::get(s, base + i, VALUE, 0).await.expect("miss");
            }
        })
        .await;
        trips[s] = commands as f64 / m as f64;
    }
    trips
}

/// Scenario 4: cold keys with an instant loader: latency and Redis round trips per miss.
pub(super) async fn miss(cfg: &Config) -> Table {
    let n = 1_000;
    let mut p50 = Samples::default();
    let mut p99 = Samples::default();
    let mut apart = Samples::default();
    let mut among_hits = Samples::default();
    let mut among_hits_in_task = Samples::default();
    let mut loads = Samples::default();
    for round in 0..cfg.rounds {
        for s in rotated(System::LOADING, round) {
            let base = 1_000_000 * (round as u64 + 1) + 100_000 * s as u64;
            // Untimed misses on keys of their own first: the misses among hits of the round
            // before left cached-redis's function starting with a GET, and its first 31 timed
            // misses would wait for two round trips, not the lease script's one.
            for i in 0..40 {
                systems::get(s, base + 90_000 + i, VALUE, 0)
                    .await
                    .expect("miss");
            }
            systems::clients().cache.settle().await;
            let loads_before = LOADS.load(Ordering::Relaxed);
            let lat = timed_misses(s, base, n, false).await;
            p50[s].push(quantile(&lat, 0.5));
            p99[s].push(quantile(&lat, 0.99));
            loads[s].push((LOADS.load(Ordering::Relaxed) - loads_before) as f64 / n as f64);
            let lat = timed_misses(s, base + 50_000, n, true).await;
            apart[s].push(quantile(&lat, 0.5));
        }
        // Keys of their own, beyond those of the systems' ranges above.
        let base = 1_000_000 * (round as u64 + 1) + 700_000;
        // Rotated, and reversed every other round: each system follows each other one.
        let mut order = rotated(System::LOADING, round);
        if round % 2 == 1 {
            order.reverse();
        }
        let lat = misses_among_hits(order.clone(), base, n).await;
        let in_a_task = in_task(misses_among_hits(order.clone(), base + 50_000, n)).await;
        for s in order {
            among_hits[s].push(quantile(&lat[s], 0.5));
            among_hits_in_task[s].push(quantile(&in_a_task[s], 0.5));
        }
    }
    let trips = commands_per_miss(cfg).await;
    let mut table = Table::new(
        "4. Miss path: cold keys, instant loader",
        &[
            "system",
            "p50 µs",
            "p99 µs",
            "p50 µs, misses apart",
            "p50 µs, one miss in ten calls",
            "the same, in a task",
            "loads per miss",
            "Redis commands per miss",
            "round trips the caller waits for",
        ],
    );
    for s in System::LOADING {
        table.rows.push(vec![
            s.name().into(),
            Spread::of(&p50[s]).show(1),
            Spread::of(&p99[s]).show(1),
            Spread::of(&apart[s]).show(1),
            Spread::of(&among_hits[s]).show(1),
            Spread::of(&among_hits_in_task[s]).show(1),
            Spread::of(&loads[s]).show(2),
            format!("{:.2}", trips[s]),
            waited_for(s).into(),
        ]);
    }
    table.note = format!(
        "Calls are made on the thread that blocks on the bench's multi-threaded runtime (as `#[tokio::main]`'s body is), except in the column \"in a task\", whose calls are made from a task on the runtime, as a request handler's are: from `block_on`'s thread, handing cached-redis's write-back to the runtime wakes a worker thread (an eventfd write and a futex wake), which a call on a worker does not pay. {n} misses per system per round, back to back (p50, p99); then {n} more \"apart\", each timed alone with cached-redis's background write-back settled (`Cache::settle`, untimed) before the next, so that a miss does not queue behind the previous one's write-back in Redis and on the 2 cores; {} rounds. Then {n} misses per system, each after nine hits of a warm key and timed alone (background work settled, untimed): a function whose calls mostly hit; the systems take turns miss by miss, which worker thread polls Redis's replies moving a round's median by half. Commands are the client commands Redis received (MONITOR, excluding those a script runs) over 100 more misses, after 40 not counted. A cached-redis function whose calls keep missing (over nine in ten) starts each call with the lease script, which answers the value where there is one (`read/first_read.rs`): its misses wait for that one round trip; among hits a miss sends a GET first, then takes the lease with `SET NX` and a `GET` pipelined (`lease/after_miss.rs`). The write-back under the lease runs in the background after its caller has the value (`tests/it/miss.rs` holds its reply and sees the caller answered).",
        cfg.rounds
    );
    table
}
