//! Test support: real `redis-server` processes on free loopback ports, which tests can kill
//! and restart, and helpers to inspect what the cache stored.

use std::time::{Duration, Instant};

mod cancel;
mod cluster;
pub mod counted;
mod db;
mod gate;
mod held;
mod inspect;
mod logs;
mod near;
mod proxy;
mod rng;
pub mod rows;
mod sentinel;
mod server;
mod slot_move;
pub mod stale;
mod stampede;
mod tls;

pub use cancel::CancelAfter;
pub use cluster::{RedisCluster, one_cluster_at_a_time};
pub use db::HeldDb;
pub use gate::Gate;
pub use held::{Answered, HeldLoad, timed_read};
pub use inspect::{
    assert_no_state_left, command_calls, config_set, escaped, exists, flush_scripts, get_raw, gone,
    numsub, pttl, scan_keys, set_px,
};
pub use logs::{LogCapture, capture_logs};
pub use near::{
    in_the_near_pass, near_by_default_cache, near_cache, near_cache_timed, near_caught_up,
    near_live, near_pass, until_near_hit,
};
pub use proxy::Proxy;
pub use rng::Rng;
pub use sentinel::{MASTER, RedisSentinel};
pub use server::{RedisServer, RefusingPort, free_port};
pub use slot_move::SlotMove;
pub use stampede::{
    ChildReport, Stampede, release_together, run_when_released, stampede_in_processes,
};
pub use tls::TlsFiles;

/// Waits (bounded) until `check` holds, re-checking every few milliseconds. For conditions
/// that settle through a background task, such as a lease released after a cancellation.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
