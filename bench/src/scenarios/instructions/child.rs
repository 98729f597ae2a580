//! The instructions scenario's child: a fixed number of calls of one warm key by one probe, on
//! a current-thread runtime, then how many of them were answered the way the probe means
//! (printed as JSON).

use std::hint::black_box;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cached_redis::{Cache, Stats, redis_cached};
use cached_redis_tests::RefusingPort;

use super::Probe;
use crate::scenarios::VALUE;
use crate::systems::{self, BenchError, NearCache, System};

/// The next key a miss probe reads: new to Redis, whichever child ran before on it.
static NEXT_MISS: AtomicU64 = AtomicU64::new(0);

fn next_miss() -> u64 {
    let first = u64::from(std::process::id()) * 10_000_000 + 1_000_000;
    let _ = NEXT_MISS.compare_exchange(0, first, Ordering::Relaxed, Ordering::Relaxed);
    NEXT_MISS.fetch_add(1, Ordering::Relaxed)
}

/// The breaker probe's cache, at a port that refuses connections (kept bound meanwhile).
static REFUSED: OnceLock<(RefusingPort, Cache)> = OnceLock::new();

fn refused_cache() -> &'static Cache {
    &REFUSED.get().expect("breaker probe set up").1
}

/// The loader of the breaker probe: a small value, no I/O.
async fn small(id: u64) -> Result<u64, BenchError> {
    Ok(black_box(id).wrapping_mul(2))
}

/// cached-redis over [`small`], on a cache whose Redis refuses connections.
#[redis_cached(key = "small:<id>", ttl = "10m", cache = refused_cache())]
async fn refused_get(id: u64) -> Result<u64, BenchError> {
    small(id).await
}

/// Runs the child: `calls` calls of `probe` against the Redis at `url`.
pub(crate) fn instructions_child(probe: &str, calls: &str, url: &str) {
    let probe = Probe::parse(probe).expect("a probe's name");
    let calls: u64 = calls.parse().expect("a number of calls");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let intended = runtime.block_on(async {
        set_up(probe, url).await;
        let before = counted(probe);
        for _ in 0..calls {
            call(probe).await;
        }
        counted(probe)
            .zip(before)
            .map(|(after, before)| after - before)
    });
    println!(
        "{}",
        serde_json::json!({ "calls": calls, "intended": intended })
    );
}

/// Connects what `probe` reads and makes its key warm (for the breaker, opens the breaker).
/// Time-driven work is kept out of the count: the near cache's heartbeat runs every 12 s
/// (`near_max_lag` of 60 s) and the breaker's cooldown is 10 minutes, since callgrind slows
/// the child some fifty times while leaving timers at their wall-clock pace.
async fn set_up(probe: Probe, url: &str) {
    if probe == Probe::BreakerOpen {
        let port = RefusingPort::new();
        let cache = Cache::builder(&port.url())
            .namespace("bench-probe")
            .breaker_cooldown(Duration::from_secs(600))
            .build()
            .await
            .expect("cache");
        let _ = REFUSED.set((port, cache));
    }
    if matches!(probe, Probe::Loader | Probe::BreakerOpen) {
        for _ in 0..50 {
            call(probe).await;
        }
        return;
    }
    let near = match probe {
        Probe::NearHit | Probe::NearHitOwned => NearCache::Lag(Duration::from_secs(60)),
        _ => NearCache::Off,
    };
    systems::connect(url, near).await;
    match probe {
        Probe::Raw => systems::warm(System::Raw, 1, VALUE).await,
        Probe::NearHitOwned => {
            systems::make_near(|| async {
                systems::near_owned_get(1, VALUE, 0).await.expect("read");
            })
            .await;
        }
        _ => systems::warm(probe.system().expect("a system"), 1, VALUE).await,
    }
    for _ in 0..50 {
        call(probe).await;
    }
}

/// One call, its value dropped.
async fn call(probe: Probe) {
    let (id, size) = (black_box(1), black_box(VALUE));
    match probe {
        Probe::Raw => drop(black_box(systems::raw_get(id, size).await.expect("hit"))),
        Probe::HandWritten => drop(black_box(systems::hand_written_get(id, size, 0).await)),
        Probe::RedisHit => drop(black_box(systems::cached_redis_get(id, size, 0).await)),
        Probe::NearHit => drop(black_box(systems::near_get(id, size, 0).await)),
        Probe::NearHitOwned => drop(black_box(systems::near_owned_get(id, size, 0).await)),
        Probe::Loader => drop(black_box(small(id).await)),
        Probe::BreakerOpen => drop(black_box(refused_get(id).await)),
        Probe::HandWrittenMiss => {
            drop(black_box(
                systems::hand_written_get(next_miss(), size, 0).await,
            ));
        }
        Probe::Miss => drop(black_box(
            systems::cached_redis_get(next_miss(), size, 0).await,
        )),
        Probe::MissAmongHits => {
            for _ in 0..super::HITS_PER_MISS {
                drop(black_box(systems::cached_redis_get(id, size, 0).await));
            }
            drop(black_box(
                systems::cached_redis_get(next_miss(), size, 0).await,
            ));
        }
    }
}

/// The counter of calls answered the way `probe` means, where there is one.
fn counted(probe: Probe) -> Option<i64> {
    let stats: Stats = match probe {
        Probe::RedisHit | Probe::Miss | Probe::MissAmongHits => systems::clients().cache.stats(),
        Probe::NearHit | Probe::NearHitOwned => systems::near_stats(),
        Probe::BreakerOpen => refused_cache().stats(),
        Probe::Raw | Probe::HandWritten | Probe::Loader | Probe::HandWrittenMiss => return None,
    };
    Some(match probe {
        Probe::RedisHit => stats.hits as i64,
        Probe::Miss | Probe::MissAmongHits => stats.misses as i64,
        Probe::NearHit | Probe::NearHitOwned => stats.near_hits as i64,
        // Calls that ran the loader without Redis, less the Redis errors a half-open
        // breaker's trial would add.
        _ => stats.fallbacks as i64 - stats.redis_errors as i64,
    })
}
