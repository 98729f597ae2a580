//! Scenario 6: Redis refusing connections: each system's overhead over calling the loader.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::per_system::{PerSystem, Samples};
use crate::report::{Spread, Table, quantile};
use crate::systems::{self, System};

use super::{Config, VALUE, micros, rotated};

/// Scenario 6: Redis refusing connections: each system's overhead over calling the loader.
pub(super) async fn down(cfg: &Config) -> Table {
    let mut overhead50 = Samples::default();
    let mut overhead99 = Samples::default();
    let mut errors = PerSystem::<u64>::default();
    let mut panics = PerSystem::<u64>::default();
    let mut hung = PerSystem::<Option<u64>>::default();
    for round in 0..cfg.rounds {
        for s in rotated(System::LOADING, round) {
            let out = tokio::process::Command::new(&cfg.exe)
                .args(["down-child", s.name()])
                .stderr(Stdio::null())
                .output()
                .await
                .expect("down child");
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            overhead50[s].push(report["p50_us"].as_f64().unwrap_or(f64::NAN));
            overhead99[s].push(report["p99_us"].as_f64().unwrap_or(f64::NAN));
            errors[s] += report["errors"].as_u64().unwrap_or(0);
            panics[s] += report["panics"].as_u64().unwrap_or(0);
            if let Some(call) = report["hung"].as_u64() {
                hung[s] = Some(call);
            }
        }
    }
    let mut table = Table::new(
        "6. Redis down (connection refused): overhead per call over calling the loader directly",
        &["system", "p50 µs", "p99 µs", "calls that failed"],
    );
    for s in System::LOADING {
        let total = 2_050 * cfg.rounds;
        let failed = match (errors[s], panics[s]) {
            (0, 0) => format!("none of {total}"),
            (e, 0) => format!("{e} of {total} returned an error"),
            (0, p) => format!("{p} panicked"),
            (e, p) => format!("{e} returned an error, {p} panicked"),
        };
        let (p50, p99, failed) = if let Some(call) = hung[s] {
            (
                "–".to_owned(),
                "–".to_owned(),
                format!("call {call} did not return within 1 s"),
            )
        } else {
            (
                Spread::of(&overhead50[s]).show(1),
                Spread::of(&overhead99[s]).show(1),
                failed,
            )
        };
        table.rows.push(vec![s.name().into(), p50, p99, failed]);
    }
    table.note = "Each process makes 50 calls (cached-redis's breaker opens after 5 failures), then times 2,000, each in its own task on both sides of the comparison; failures are counted over all 2,050. A call that takes over 1 s ends that process's measurement.".into();
    table
}

/// The child side of scenario 6, connected to a port nobody listens on. Calls run in their own
/// task (on both sides of the comparison) so that a system that panics is counted, not fatal.
pub(crate) async fn down_child(system: System) {
    let (warmup, n) = (50, 2_000);
    let (mut errors, mut panics, mut hung) = (0u64, 0u64, None);
    let limit = Duration::from_secs(1);
    for i in 0..warmup {
        match tokio::time::timeout(limit, tokio::spawn(systems::get(system, i, VALUE, 0))).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(_))) => errors += 1,
            Ok(Err(_)) => panics += 1,
            Err(_) => {
                hung = Some(i + 1);
                break;
            }
        }
    }
    let mut direct = Vec::with_capacity(n);
    let mut through = Vec::with_capacity(n);
    for i in 0..n as u64 {
        if hung.is_some() {
            break;
        }
        let started = Instant::now();
        let _ = tokio::spawn(async move { std::hint::black_box(systems::payload(i, VALUE)) }).await;
        direct.push(micros(started.elapsed()));
        let started = Instant::now();
        match tokio::time::timeout(limit, tokio::spawn(systems::get(system, i, VALUE, 0))).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(_))) => errors += 1,
            Ok(Err(_)) => panics += 1,
            Err(_) => hung = Some(warmup + i + 1),
        }
        through.push(micros(started.elapsed()));
    }
    direct.sort_by(f64::total_cmp);
    through.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "p50_us": quantile(&through, 0.5) - quantile(&direct, 0.5),
            "p99_us": quantile(&through, 0.99) - quantile(&direct, 0.99),
            "errors": errors,
            "panics": panics,
            "hung": hung,
        })
    );
}
