//! The quickstart on a Redis Cluster: the same attribute, only the cache is built differently.
//!
//! Start a local cluster (three primaries, three replicas), then run the example:
//!
//! ```text
//! for port in 7000 7001 7002 7003 7004 7005; do
//!   redis-server --port $port --cluster-enabled yes --cluster-config-file nodes-$port.conf \
//!     --save "" --appendonly no --dir /tmp --daemonize yes
//! done
//! redis-cli --cluster create 127.0.0.1:7000 127.0.0.1:7001 127.0.0.1:7002 \
//!   127.0.0.1:7003 127.0.0.1:7004 127.0.0.1:7005 --cluster-replicas 1 --cluster-yes
//! REDIS_CLUSTER_URLS=redis://127.0.0.1:7000,redis://127.0.0.1:7001 cargo run -p examples --bin cluster
//! ```

use std::time::Instant;

use cached_redis::{Cache, redis_cached};

/// A stand-in for a database query.
#[redis_cached(key = "price:<sku>", ttl = "5m", jitter = "10%")]
async fn price(sku: &str) -> Result<u64, std::io::Error> {
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    Ok(sku.len() as u64 * 100)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let urls = std::env::var("REDIS_CLUSTER_URLS").unwrap_or_else(|_| {
        "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002".into()
    });
    let nodes: Vec<&str> = urls.split(',').collect();
    let cache = Cache::cluster_builder(&nodes)
        .namespace("cluster-example")
        .build()
        .await?;
    cached_redis::set_global(cache.clone());

    for sku in ["apple", "pear", "banana"] {
        let _ = invalidate_price(sku).await;
        for attempt in ["miss", "hit"] {
            let started = Instant::now();
            let value = price(sku).await?;
            println!(
                "{sku:<7} {attempt:<5} {value:>4} in {:?}",
                started.elapsed()
            );
        }
    }
    let stats = cache.stats();
    println!(
        "{} hits, {} misses, {} fallbacks",
        stats.hits, stats.misses, stats.fallbacks
    );
    Ok(())
}
