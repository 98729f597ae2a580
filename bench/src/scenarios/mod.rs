//! The scenarios, one file each. Every one runs all systems round by round, rotating their
//! order, so they share the machine's noise; figures are medians over rounds with the range
//! beside them.

mod allocations;
mod batch;
mod cluster;
mod down;
mod expiry;
mod instructions;
mod large;
mod latency;
mod miss;
mod near;
mod stampede;
mod throughput;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::report::Table;
use crate::systems::System;

pub(crate) use down::down_child;
pub(crate) use instructions::instructions_child;
pub(crate) use stampede::stampede_child;

/// Run settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) url: String,
    pub(crate) rounds: usize,
    /// Seconds per throughput measurement.
    pub(crate) secs: f64,
    pub(crate) exe: std::path::PathBuf,
}

/// The scenarios, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    HitLatency,
    HitThroughput,
    Matrix,
    Miss,
    Stampede,
    Down,
    Allocations,
    Cluster,
    Large,
    Near,
    Instructions,
    Expiry,
    Batch,
}

impl Scenario {
    pub(crate) const ALL: [Scenario; 13] = [
        Scenario::HitLatency,
        Scenario::HitThroughput,
        Scenario::Matrix,
        Scenario::Miss,
        Scenario::Stampede,
        Scenario::Down,
        Scenario::Allocations,
        Scenario::Cluster,
        Scenario::Large,
        Scenario::Near,
        Scenario::Instructions,
        Scenario::Expiry,
        Scenario::Batch,
    ];

    /// The name it is chosen by on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::HitLatency => "hit-latency",
            Scenario::HitThroughput => "hit-throughput",
            Scenario::Matrix => "matrix",
            Scenario::Miss => "miss",
            Scenario::Stampede => "stampede",
            Scenario::Down => "down",
            Scenario::Allocations => "allocations",
            Scenario::Cluster => "cluster",
            Scenario::Large => "large",
            Scenario::Near => "near",
            Scenario::Instructions => "instructions",
            Scenario::Expiry => "expiry",
            Scenario::Batch => "batch",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Runs it and returns its tables (the matrix also writes its plot).
    pub(crate) async fn run(self, cfg: &Config) -> Vec<Table> {
        let table = match self {
            Scenario::HitLatency => latency::hit_latency(cfg).await,
            Scenario::HitThroughput => throughput::hit_throughput(cfg).await,
            Scenario::Matrix => {
                let (table, plot) = throughput::matrix(cfg).await;
                let path = concat!(env!("CARGO_MANIFEST_DIR"), "/results/throughput.svg");
                std::fs::write(path, plot).expect("write plot");
                table
            }
            Scenario::Miss => miss::miss(cfg).await,
            Scenario::Stampede => stampede::stampede(cfg).await,
            Scenario::Down => down::down(cfg).await,
            Scenario::Allocations => allocations::allocations(cfg).await,
            Scenario::Cluster => cluster::cluster(cfg).await,
            Scenario::Large => large::large_values(cfg).await,
            Scenario::Near => return near::near(cfg).await,
            Scenario::Instructions => instructions::instructions(cfg).await,
            Scenario::Expiry => expiry::expiry(cfg).await,
            Scenario::Batch => batch::batch(cfg).await,
        };
        vec![table]
    }
}

/// The size of the values most scenarios read, in bytes.
const VALUE: usize = 1_000;

fn rotated<const N: usize>(systems: [System; N], round: usize) -> Vec<System> {
    let mut order = systems.to_vec();
    order.rotate_left(round % N);
    // `BENCH_ONLY=<system>` runs one system alone, for profiling; reports then compare nothing.
    if let Some(only) = std::env::var("BENCH_ONLY")
        .ok()
        .as_deref()
        .and_then(System::parse)
    {
        order.retain(|s| *s == only);
    }
    order
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Which ids a throughput measurement's tasks read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// Task `t` reads id `t % n`, always.
    PerTask(u64),
    /// Every task reads id 0.
    Hot,
    /// Each call reads an id drawn uniformly from `0..n` (a xorshift per task).
    Uniform(u64),
}

impl Keys {
    /// The ids task `task` reads, one per call.
    fn ids(self, task: usize) -> impl FnMut() -> u64 {
        let mut state = (task as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        move || match self {
            Keys::PerTask(n) => task as u64 % n,
            Keys::Hot => 0,
            Keys::Uniform(n) => {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % n
            }
        }
    }
}

/// `tasks` tasks calling `read(id)` over 16 ids for `secs`: operations per second.
async fn ops_per_second<F, Fut>(tasks: usize, secs: f64, read: F) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    ops_per_second_over(Keys::PerTask(16), tasks, secs, read)
        .await
        .per_second
}

/// What a throughput measurement counted.
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// Calls completed.
    ops: u64,
    per_second: f64,
}

/// `tasks` tasks calling `read(id)` on `keys` for `secs`: operations per second. A timer
/// stops them through a flag rather than each call reading the clock, which would be a
/// noticeable share of a near hit.
async fn ops_per_second_over<F, Fut>(keys: Keys, tasks: usize, secs: f64, read: F) -> Rate
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let timer = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            stop.store(true, Ordering::Relaxed);
        }
    });
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (ops, stop, read) = (ops.clone(), stop.clone(), read.clone());
            tokio::spawn(async move {
                let mut next = keys.ids(t);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    read(next()).await;
                    n += 1;
                }
                ops.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    timer.await.expect("timer");
    let ops = ops.load(Ordering::Relaxed);
    Rate {
        ops,
        per_second: ops as f64 / started.elapsed().as_secs_f64(),
    }
}
