//! Rows of a function read through a cache, as the lease-first tests read them: the function's
//! policy, a call of one row whose load counts itself, the misses that make the function's
//! calls start with the lease script, and a cache behind a proxy that holds replies.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use cached_redis::{Cache, Key, Policy};

use crate::Proxy;

/// The policy of function `name`: a minute's TTL.
pub fn policy(name: &'static str) -> Policy {
    Policy::new(name, Duration::from_secs(60)).unwrap()
}

/// Reads row `id` of `name` through `cache`, counting loads; the load answers `id`.
pub async fn call(
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

/// 40 misses of distinct rows of `name` from `first` on: its calls then start with the lease
/// script.
pub async fn lease_first(cache: &Cache, name: &'static str, first: u32) {
    let loads = AtomicU32::new(0);
    for id in first..first + 40 {
        assert_eq!(call(cache, name, id, &loads).await, Ok(id));
    }
    assert_eq!(loads.load(SeqCst), 40);
    cache.settle().await;
}

/// A cache through `proxy` (calls wait up to half a minute for a held reply) and the proxy's
/// index of its writes connection.
pub async fn proxied(
    proxy: &Proxy,
    admin: &mut redis::aio::MultiplexedConnection,
    namespace: &str,
) -> (Cache, usize) {
    let builder = Cache::builder(&proxy.url())
        .namespace(namespace)
        .op_timeout(Duration::from_secs(30));
    proxy.cache_and_writes(admin, builder).await
}
