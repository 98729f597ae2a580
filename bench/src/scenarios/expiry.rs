//! Scenario 13: one hot key whose entries live one second, 64 tasks reading it without pause
//! for ten windows, a 20 ms loader: the latency callers see at each expiry, and the loads.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::report::{Spread, Table, quantile};
use crate::systems::expiry::{Expiry, LOADER_MS, TTL};
use crate::systems::{self, LOADS};

use super::{Config, VALUE, micros};

const TASKS: usize = 64;
const WINDOWS: u32 = 10;

/// Every call's latency, in µs, sorted: `TASKS` tasks calling `read` for `run`.
async fn latencies<F, Fut>(run: Duration, read: F) -> Vec<f64>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let read = Arc::new(read);
    let until = Instant::now() + run;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let read = read.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let started = Instant::now();
                    assert!(read().await, "a read failed");
                    lat.push(micros(started.elapsed()));
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("reader"));
    }
    all.sort_by(f64::total_cmp);
    all
}

/// Scenario 13: expiry of one hot key under steady reads.
pub(super) async fn expiry(cfg: &Config) -> Table {
    let n = Expiry::ALL.len();
    let (mut p50, mut p99, mut max, mut loads) = (
        vec![vec![]; n],
        vec![vec![]; n],
        vec![vec![]; n],
        vec![vec![]; n],
    );
    let mut slow = vec![vec![]; n];
    let mut hit_p99 = Vec::new();
    for round in 0..cfg.rounds {
        // The baseline: the same tasks on a key that does not expire (every call a hit).
        let warm = 800_000_000 + round as u64;
        systems::cached_redis_get(warm, VALUE, 0)
            .await
            .expect("warm");
        let hits = latencies(Duration::from_secs(2), move || async move {
            systems::cached_redis_get(warm, VALUE, 0).await.is_ok()
        });
        hit_p99.push(quantile(&hits.await, 0.99));
        let mut order = Expiry::ALL.to_vec();
        order.rotate_left(round % n);
        for variant in order {
            let i = variant as usize;
            let id = 700_000_000 + 1_000 * round as u64 + i as u64;
            // Warm: the key's first load is not an expiry.
            variant.get(id, VALUE).await.expect("warm");
            let before = LOADS.load(Ordering::Relaxed);
            let run = TTL * WINDOWS;
            let lat = latencies(
                run,
                move || async move { variant.get(id, VALUE).await.is_ok() },
            );
            let lat = lat.await;
            let loaded = LOADS.load(Ordering::Relaxed) - before;
            p50[i].push(quantile(&lat, 0.5) / 1e3);
            p99[i].push(quantile(&lat, 0.99) / 1e3);
            max[i].push(lat.last().copied().unwrap_or(0.0) / 1e3);
            // Calls that took half the loader's time or more: they waited for a load.
            let waited = lat
                .iter()
                .filter(|&&us| us >= LOADER_MS as f64 * 500.0)
                .count();
            slow[i].push(waited as f64 / f64::from(WINDOWS));
            loads[i].push(loaded as f64 / f64::from(WINDOWS));
        }
    }
    let hit = Spread::of(&hit_p99).median / 1e3;
    let mut table = Table::new(
        "13. Expiry: one hot key, 1 s TTL, 64 tasks reading for 10 windows, 20 ms loader",
        &[
            "system",
            "p50 ms",
            "p99 ms",
            "max ms",
            "calls ≥ 10 ms per window",
            "p99 vs hit p99",
            "loads per window",
        ],
    );
    for variant in Expiry::ALL {
        let i = variant as usize;
        let p99_median = Spread::of(&p99[i]).median;
        table.rows.push(vec![
            variant.name().into(),
            Spread::of(&p50[i]).show(2),
            Spread::of(&p99[i]).show(2),
            Spread::of(&max[i]).show(1),
            Spread::of(&slow[i]).show(1),
            format!("{:.2}×", p99_median / hit),
            Spread::of(&loads[i]).show(2),
        ]);
    }
    table.note = format!(
        "{} rounds; each variant reads a key of its own for {WINDOWS} TTL windows of {} s, its loader taking {LOADER_MS} ms. \"hit p99\" is the same 64 tasks reading a key that does not expire through cached-redis for 2 s, every call a hit: {hit:.2} ms (median of rounds). The key is loaded once before the timed run. A call of 10 ms or more (half the loader's time) waited for a load. The `stale` and `refresh = \"early\"` functions borrow nothing from their callers, so their refreshes run in the background: no caller waits for them.",
        cfg.rounds,
        TTL.as_secs()
    );
    table
}
