//! The nodes a near cache tracks (the one Redis, every master of a cluster, or the primary
//! Sentinel names), and whether that set is still the one a session tracks.

use redis::RedisResult;

use crate::conn::LazyCluster;
use crate::conn::topology::Master;

/// Where a cache's entries live.
pub(crate) enum Nodes {
    /// One Redis: a RESP3 client for it.
    One(Box<redis::Client>),
    /// A cluster: every master, as `CLUSTER NODES` names them.
    Cluster(LazyCluster),
    /// The primary Sentinel names.
    #[cfg(feature = "sentinel")]
    Sentinel(crate::conn::sentinel::Primary),
}

/// What one session tracks: a RESP3 client per node, and the view they came from.
pub(super) struct Tracked {
    pub(super) clients: Vec<redis::Client>,
    view: View,
}

#[derive(PartialEq, Eq)]
enum View {
    One,
    Masters(Vec<Master>),
    #[cfg(feature = "sentinel")]
    Generation(u64),
}

impl Nodes {
    /// The nodes to track now.
    pub(super) async fn tracked(&self) -> RedisResult<Tracked> {
        match self {
            Nodes::One(client) => Ok(Tracked {
                clients: vec![(**client).clone()],
                view: View::One,
            }),
            Nodes::Cluster(cluster) => {
                let masters = sorted(cluster.masters().await?);
                let resp3 = redis::ProtocolVersion::RESP3;
                let clients = masters
                    .iter()
                    .map(|master| cluster.node_client(master, resp3))
                    .collect::<RedisResult<_>>()?;
                Ok(Tracked {
                    clients,
                    view: View::Masters(masters),
                })
            }
            #[cfg(feature = "sentinel")]
            Nodes::Sentinel(primary) => {
                let (generation, info) = primary.named().await?;
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_protocol(redis::ProtocolVersion::RESP3);
                Ok(Tracked {
                    clients: vec![redis::Client::open(info.set_redis_settings(settings))?],
                    view: View::Generation(generation),
                })
            }
        }
    }

    /// Whether the nodes to track are still `tracked`'s: a failover, a master added or
    /// removed, or a new primary named means a session must start over.
    pub(super) async fn unchanged(&self, tracked: &Tracked) -> RedisResult<bool> {
        Ok(match self {
            Nodes::One(_) => true,
            Nodes::Cluster(cluster) => {
                tracked.view == View::Masters(sorted(cluster.masters().await?))
            }
            #[cfg(feature = "sentinel")]
            Nodes::Sentinel(primary) => tracked.view == View::Generation(primary.generation()),
        })
    }
}

fn sorted(mut masters: Vec<Master>) -> Vec<Master> {
    masters.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
    masters
}
