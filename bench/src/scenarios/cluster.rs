//! Scenario 8: cached-redis hit throughput on one node against a three-primary cluster.

use std::time::Duration;

use crate::report::{Spread, Table, ratio};
use crate::systems;

use super::{Config, VALUE, ops_per_second};

/// Scenario 8: cached-redis hit throughput on one node against a three-primary cluster, both
/// started on this machine, through `Cache::fetch` (what the attribute expands to).
pub(super) async fn cluster(cfg: &Config) -> Table {
    let cluster =
        tokio::task::spawn_blocking(|| cached_redis_tests::RedisCluster::start_with_replicas(0))
            .await
            .expect("cluster start");
    let urls = cluster.urls();
    let on_cluster =
        cached_redis::Cache::cluster_builder(&urls.iter().map(String::as_str).collect::<Vec<_>>())
            .namespace("bench-cluster")
            .build()
            .await
            .expect("cluster cache");
    let on_node = cached_redis::Cache::builder(&cfg.url)
        .namespace("bench-node")
        .build()
        .await
        .expect("node cache");
    let policy = cached_redis::Policy::new("bench", Duration::from_secs(600)).expect("policy");
    let read = move |cache: cached_redis::Cache, id: u64| async move {
        let key = cached_redis::Key::builder().text("p:").part(&id).build();
        cache
            .fetch(&key, &policy, async move {
                Ok::<_, String>(systems::payload(id, VALUE))
            })
            .await
    };
    for id in 0..16 {
        read(on_cluster.clone(), id).await.expect("warm");
        read(on_node.clone(), id).await.expect("warm");
    }
    let caches = [("one node", on_node), ("3-primary cluster", on_cluster)];
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..cfg.rounds {
        for turn in 0..2 {
            let which = (round + turn) % 2;
            let cache = caches[which].1.clone();
            let read = move |id| {
                let cache = cache.clone();
                async move {
                    read(cache, id).await.expect("hit");
                }
            };
            rates[which].push(ops_per_second(64, cfg.secs, read).await);
        }
    }
    let mut table = Table::new(
        "8. cached-redis on one node against a 3-primary cluster: hit throughput, 64 tasks, ~1 KB",
        &["target", "ops/s", "vs one node", "hits"],
    );
    let node = Spread::of(&rates[0]).median;
    for (i, (name, cache)) in caches.iter().enumerate() {
        let rate = Spread::of(&rates[i]);
        table.rows.push(vec![
            (*name).to_owned(),
            rate.show(0),
            ratio(rate.median, node),
            cache.stats().hits.to_string(),
        ]);
    }
    table.note = format!(
        "{:.1} s per target per round; {} rounds. All servers and the client share this machine's cores, so the cluster cannot show the capacity it adds across machines; this measures the client-side cost of cluster routing.",
        cfg.secs, cfg.rounds
    );
    drop(cluster);
    table
}
