//! Scenario 14: batch reads, 100 ids a call at 0%, 90% and 100% hits: cached-redis `batch`
//! against 100 sequential and 100 concurrent calls of cached-redis's single-id function, and
//! 100 concurrent calls of the `cached` crate's. Latency, loads and Redis commands a call.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::report::{Spread, Table, quantile};
use crate::systems::{self, LOADS};

use super::miss::client_commands;
use super::{Config, VALUE, micros};

/// Ids a call.
const IDS: u64 = 100;
/// Timed calls per way, hit rate and round.
const CALLS: u64 = 20;
/// The hit rates, in percent.
const HITS: [u64; 3] = [0, 90, 100];

/// How 100 ids are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Batch,
    Sequential,
    Concurrent,
    CachedCrate,
}

impl Way {
    const ALL: [Way; 4] = [
        Way::Batch,
        Way::Sequential,
        Way::Concurrent,
        Way::CachedCrate,
    ];

    fn name(self) -> &'static str {
        match self {
            Way::Batch => "cached-redis `batch`",
            Way::Sequential => "cached-redis, 100 sequential calls",
            Way::Concurrent => "cached-redis, 100 concurrent calls",
            Way::CachedCrate => "cached, 100 concurrent calls",
        }
    }

    /// What its caller waits for, in round trips.
    fn waited_for(self, hit_percent: u64) -> &'static str {
        match (self, hit_percent) {
            (Way::Batch, 100) => "1 (MGET)",
            (Way::Batch, _) => "2 (MGET, the leases sent together)",
            (Way::Sequential, 100) => "100",
            (Way::Sequential, _) => "100 + 2 a miss",
            (Way::Concurrent | Way::CachedCrate, _) => {
                "as many as the connection's pipelining makes of them"
            }
        }
    }

    /// Reads `ids` this way; panics on an error.
    async fn read(self, ids: &[u64]) {
        match self {
            Way::Batch => {
                let found = systems::cached_redis_batch(VALUE, ids)
                    .await
                    .expect("batch");
                assert_eq!(found.len(), ids.len());
            }
            Way::Sequential => {
                for &id in ids {
                    systems::cached_redis_get(id, VALUE, 0).await.expect("read");
                }
            }
            Way::Concurrent => {
                let reads = ids
                    .iter()
                    .map(|&id| systems::cached_redis_get(id, VALUE, 0));
                for read in futures_util::future::join_all(reads).await {
                    read.expect("read");
                }
            }
            Way::CachedCrate => {
                let reads = ids.iter().map(|&id| systems::cached_get(id, VALUE, 0));
                for read in futures_util::future::join_all(reads).await {
                    read.expect("read");
                }
            }
        }
    }
}

/// The first ids of call `call`: unused by any other call of the run.
fn first_id(way: Way, hit_percent: u64, round: usize, call: u64) -> u64 {
    let way = Way::ALL.iter().position(|w| *w == way).expect("a way") as u64;
    3_000_000_000 + (((round as u64 * 4 + way) * 101 + hit_percent) * CALLS + call) * IDS
}

/// One timed call of `way` with `hit_percent` of its ids cached beforehand (untimed): its
/// latency in µs and how many loads it ran.
async fn timed_call(way: Way, hit_percent: u64, first: u64) -> (f64, u64) {
    let ids: Vec<u64> = (first..first + IDS).collect();
    let cached = (IDS * hit_percent / 100) as usize;
    way.read(&ids[..cached]).await;
    systems::clients().cache.settle().await;
    let loads = LOADS.load(Ordering::Relaxed);
    let started = Instant::now();
    way.read(&ids).await;
    let took = micros(started.elapsed());
    // The write-backs, which run after the caller is answered, untimed.
    systems::clients().cache.settle().await;
    (took, LOADS.load(Ordering::Relaxed) - loads)
}

/// Scenario 14: 100 ids a call, at 0%, 90% and 100% hits.
pub(super) async fn batch(cfg: &Config) -> Table {
    let mut table = Table::new(
        "14. Batch reads: 100 ids a call",
        &[
            "way",
            "hits",
            "p50 µs a call",
            "loads a call",
            "Redis commands a call",
            "round trips the caller waits for",
        ],
    );
    for hit_percent in HITS {
        for way in Way::ALL {
            let (mut p50, mut loads) = (Vec::new(), Vec::new());
            for round in 0..cfg.rounds {
                let mut lat = Vec::new();
                for call in 0..CALLS {
                    let first = first_id(way, hit_percent, round, call);
                    let (micros, loaded) = timed_call(way, hit_percent, first).await;
                    lat.push(micros);
                    loads.push(loaded as f64);
                }
                lat.sort_by(f64::total_cmp);
                p50.push(quantile(&lat, 0.5));
            }
            let first = first_id(way, hit_percent, cfg.rounds, 0);
            let ids: Vec<u64> = (first..first + IDS).collect();
            let cached = (IDS * hit_percent / 100) as usize;
            way.read(&ids[..cached]).await;
            systems::clients().cache.settle().await;
            let marker = format!("batch-{hit_percent}-{}", way.name().len());
            let commands = client_commands(cfg, &marker, way.read(&ids)).await;
            loads.sort_by(f64::total_cmp);
            table.rows.push(vec![
                way.name().into(),
                format!("{hit_percent}%"),
                Spread::of(&p50).show(0),
                format!("{:.0}", quantile(&loads, 0.5)),
                commands.to_string(),
                way.waited_for(hit_percent).into(),
            ]);
        }
    }
    table.note = single_hit_note(cfg).await;
    table
}

/// The note: how the table was made, and a single hit's p50 to compare a batch of hits with.
async fn single_hit_note(cfg: &Config) -> String {
    let id = 3_999_999_999;
    systems::cached_redis_get(id, VALUE, 0)
        .await
        .expect("prime");
    systems::clients().cache.settle().await;
    let mut lat = Vec::new();
    for _ in 0..1_000 {
        let started = Instant::now();
        systems::cached_redis_get(id, VALUE, 0).await.expect("hit");
        lat.push(micros(started.elapsed()));
    }
    lat.sort_by(f64::total_cmp);
    let raw = raw_mget_p50().await;
    format!(
        "Raw redis-rs, one `MGET` of 100 primed ~1 KB values and `serde_json` decoding each: {raw:.0} µs p50 (the floor for a batch of hits). {CALLS} calls of 100 ids (~1 KB values) per way, hit rate and round, each on ids no other call used, with the cached ones read beforehand (untimed) and every write-back settled after (untimed); p50 per round, median over {} rounds (min–max). Loads are calls of the loader (the batch function's body takes all its missing ids at once). Commands are the client commands Redis received for one more call (MONITOR; those a script runs are not counted). A single cached-redis hit's p50 in this run: {:.1} µs.",
        cfg.rounds,
        quantile(&lat, 0.5)
    )
}

/// The p50 of a raw `MGET` of 100 primed values, each decoded.
async fn raw_mget_p50() -> f64 {
    let ids: Vec<u64> = (4_000_000_000..4_000_000_000 + IDS).collect();
    for &id in &ids {
        systems::prime_raw(id, VALUE).await;
    }
    let mut lat = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let found = systems::raw_mget(&ids, VALUE).await;
        lat.push(micros(started.elapsed()));
        assert_eq!(found.len(), ids.len());
    }
    lat.sort_by(f64::total_cmp);
    quantile(&lat, 0.5)
}
