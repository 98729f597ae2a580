//! Rows of a function read through a cache, as the lease-first tests read them: the function's
//! policy, and a call of one row whose load counts itself.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use cached_redis::{Cache, Key, Policy};

/// The policy of function `name`: a minute's TTL.
pub(crate) fn policy(name: &'static str) -> Policy {
    Policy::new(name, Duration::from_secs(60)).unwrap()
}

/// Reads row `id` of `name` through `cache`, counting loads; the load answers `id`.
pub(crate) async fn call(
    cache: &Cache,
    name: &'static str,
    id: u32,
    loads: &AtomicU32,
) -> Result<u32, String> {
    let key = Key::raw(format!("{name}:{id}"));
    let load = async {
        loads.fetch_add(1, SeqCst);
        Ok(id)
    };
    cache.fetch(&key, &policy(name), load).await
}
