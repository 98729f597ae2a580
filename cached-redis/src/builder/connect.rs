//! The connections each deployment needs: one Redis, a cluster, or a primary that Sentinel
//! names; for reads, writes, wake-ups and replica confirmations.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;

use crate::Error;
use crate::conn::{Conn, LazyCluster};
use crate::read::near::Nodes;
use crate::read::wake::Wakeups;
use crate::write::confirm_pool::MakeConn;
use crate::write::replicated::Replicated;

/// A deployment's connections: for reads, for writes, for wake-ups, and for invalidations
/// that wait for replicas (if asked for).
pub(super) struct Connections {
    pub(super) reads: Conn,
    pub(super) writes: Conn,
    pub(super) wakeups: Wakeups,
    pub(super) replicated: Option<Replicated>,
    /// Where the entries live, for a near cache's tracking connections.
    pub(super) nodes: Option<Nodes>,
}

impl Connections {
    /// A disabled cache's: none of them is ever asked.
    pub(super) fn disabled() -> Result<Connections, Error> {
        Ok(Connections {
            reads: Conn::Disabled,
            writes: Conn::Disabled,
            wakeups: Wakeups::new(|_| Ok(Conn::Disabled))?,
            replicated: None,
            nodes: None,
        })
    }
}

/// What making a deployment's connections takes from the builder's options.
pub(super) struct Settings<'a> {
    pub(super) urls: &'a [String],
    pub(super) cluster: bool,
    #[cfg(feature = "sentinel")]
    pub(super) sentinel: Option<&'a crate::conn::sentinel::Service>,
    #[cfg(feature = "sentinel")]
    pub(super) node_auth: Option<&'a crate::conn::sentinel::NodeAuth>,
    #[cfg(feature = "tls")]
    pub(super) tls_root_cert: Option<&'a [u8]>,
    pub(super) namespace: &'a str,
    pub(super) op_timeout: Duration,
    pub(super) replicas: Option<(u32, Duration)>,
}

impl Settings<'_> {
    fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        #[cfg(feature = "tls")]
        if let Some(root_cert) = &self.tls_root_cert {
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert.to_vec()),
            };
            return redis::Client::build_with_tls(url, certificates);
        }
        redis::Client::open(url)
    }

    /// No retries inside the connection manager: a command during an outage fails at once (and
    /// the next one tries to connect again) instead of waiting out a retry series.
    pub(super) fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.op_timeout.max(Duration::from_millis(500))))
            .set_response_timeout(None)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(0)
    }

    /// The Sentinel service this cache follows, with the data nodes' credentials; refuses
    /// those credentials on a cache not behind Sentinel.
    #[cfg(feature = "sentinel")]
    pub(super) fn sentinel_service(&self) -> Result<Option<crate::conn::sentinel::Service>, Error> {
        match (&self.sentinel, &self.node_auth) {
            (None, Some(_)) => Err(Error::InvalidConfig(
                "node_auth is for a cache behind Sentinel; give one Redis or a cluster its \
                 credentials in the URL (redis://user:password@host:port)"
                    .into(),
            )),
            (service, auth) => Ok(service.cloned().map(|s| s.with_auth(auth.cloned()))),
        }
    }

    /// The connections of the deployment configured.
    pub(super) fn connections(
        &self,
        invalid: &impl Fn(&str, redis::RedisError) -> Error,
    ) -> Result<Connections, Error> {
        #[cfg(feature = "sentinel")]
        if let Some(service) = self.sentinel_service()? {
            return self.sentinel_connections(&service, invalid);
        }
        let (reads, writes, wakeups, nodes) = if self.cluster {
            let (reads, writes, wakeups) = self.cluster_connections(invalid)?;
            let nodes = match &reads {
                Conn::Cluster(cluster) => Some(Nodes::Cluster(cluster.clone())),
                _ => None,
            };
            (reads, writes, wakeups, nodes)
        } else {
            let (reads, writes, wakeups, resp3) = self.single_connections(invalid)?;
            (reads, writes, wakeups, Some(Nodes::One(Box::new(resp3))))
        };
        let replicated = self.replicated(invalid, writes.publish_command())?;
        Ok(Connections {
            reads,
            writes,
            wakeups,
            replicated,
            nodes,
        })
    }

    /// Behind Sentinel: every connection (reads, writes, wake-ups, replica-acknowledged
    /// invalidations) follows one shared discovery of the primary, so that when one of them
    /// finds the primary replaced, all of them move before their next call.
    #[cfg(feature = "sentinel")]
    fn sentinel_connections(
        &self,
        service: &crate::conn::sentinel::Service,
        invalid: &impl Fn(&str, redis::RedisError) -> Error,
    ) -> Result<Connections, Error> {
        use crate::conn::sentinel::FollowPrimary;
        for url in self.urls {
            redis::Client::open(url.as_str()).map_err(|e| invalid(url, e))?;
        }
        let primary = service.primary(self.urls)?;
        let config = self.manager_config();
        let follow = || Conn::Sentinel(FollowPrimary::new(&primary, config.clone()));
        let wakeups = Wakeups::new(|push| {
            let subscriber = FollowPrimary::subscriber(&primary, config.clone(), push);
            Ok(Conn::Sentinel(subscriber))
        })?;
        let writes = follow();
        let publish = writes.publish_command();
        let replicated = self.replicas.map(|(replicas, within)| {
            let (primary, config) = (primary.clone(), config.clone());
            let make: MakeConn =
                Box::new(move || Ok(Conn::Sentinel(FollowPrimary::new(&primary, config.clone()))));
            Replicated::new(make, (replicas, within), self.namespace, publish)
        });
        Ok(Connections {
            reads: follow(),
            writes,
            wakeups,
            replicated,
            nodes: Some(Nodes::Sentinel(primary)),
        })
    }

    /// Replica-confirmed invalidations on one Redis or a cluster, if asked for (their options
    /// checked by `assemble` first).
    fn replicated(
        &self,
        invalid: &impl Fn(&str, redis::RedisError) -> Error,
        publish: &'static str,
    ) -> Result<Option<Replicated>, Error> {
        let Some((replicas, within)) = self.replicas else {
            return Ok(None);
        };
        let make = self.confirmation_conns(invalid, within)?;
        let namespace = self.namespace;
        let replicated = Replicated::new(make, (replicas, within), namespace, publish);
        Ok(Some(replicated))
    }

    /// Makes the connections replica confirmations go over, one per confirmation under way:
    /// each like the write connection, to the same primary, connected on first use, with no
    /// reply timeout shorter than a `WAIT` of `within`.
    fn confirmation_conns(
        &self,
        invalid: &impl Fn(&str, redis::RedisError) -> Error,
        within: Duration,
    ) -> Result<MakeConn, Error> {
        if self.cluster {
            let first = &self.urls[0];
            let client = self
                .cluster_builder()
                .response_timeout(self.op_timeout.saturating_add(within))
                .build()
                .map_err(|e| invalid(first, e))?;
            let seed = redis::IntoConnectionInfo::into_connection_info(first.as_str())
                .map_err(|e| invalid(first, e))?;
            return Ok(Box::new(move || {
                Ok(Conn::Cluster(LazyCluster::new(
                    client.clone(),
                    seed.clone(),
                )))
            }));
        }
        let url = &self.urls[0];
        let client = self.client(url).map_err(|e| invalid(url, e))?;
        let config = self.manager_config();
        Ok(Box::new(move || {
            ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                .map(Conn::Single)
        }))
    }

    /// One Redis: auto-reconnecting multiplexed connections for reads and for writes, a
    /// RESP3 one for wake-ups, and the RESP3 client it is made with.
    fn single_connections(
        &self,
        invalid: &impl Fn(&str, redis::RedisError) -> Error,
    ) -> Result<(Conn, Conn, Wakeups, redis::Client), Error> {
        let url = &self.urls[0];
        let client = self.client(url).map_err(|e| invalid(url, e))?;
        let config = self.manager_config();
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        let resp3_info = client.get_connection_info().clone();
        let resp3_redis = resp3_info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let pubsub_client = redis::Client::open(resp3_info.set_redis_settings(resp3_redis))?;
        let wakeups = Wakeups::new(|push| {
            let config = config.set_push_sender(push).set_automatic_resubscription();
            ConnectionManager::new_lazy_with_config(pubsub_client.clone(), config).map(Conn::Single)
        })?;
        let writes = ConnectionManager::new_lazy_with_config(client, self.manager_config())?;
        Ok((
            Conn::Single(conn),
            Conn::Single(writes),
            wakeups,
            pubsub_client,
        ))
    }

    /// The cluster clients' settings: bounded connecting, replies within `op_timeout`, one
    /// quick retry.
    fn cluster_builder(&self) -> ClusterClientBuilder {
        ClusterClientBuilder::new(self.urls.to_vec())
            .connection_timeout(self.op_timeout.max(Duration::from_millis(500)))
            .response_timeout(self.op_timeout)
            .retries(1)
            .min_retry_wait(10)
            .max_retry_wait(100)
    }

    /// A cluster: redis-rs's cluster client for reads and for writes (each its own
    /// connections), and a RESP3 one for sharded wake-ups, all connected on first use.
    fn cluster_connections(
        &self,
        invalid: &impl Fn(&str, redis::RedisError) -> Error,
    ) -> Result<(Conn, Conn, Wakeups), Error> {
        #[cfg(feature = "tls")]
        if self.tls_root_cert.is_some() {
            return Err(Error::InvalidConfig(
                "tls_root_cert is not supported for clusters; use rediss:// URLs with a CA the system trusts".into(),
            ));
        }
        for url in self.urls {
            redis::Client::open(url.as_str()).map_err(|e| invalid(url, e))?;
        }
        let builder = || self.cluster_builder();
        let first = &self.urls[0];
        let client = builder().build().map_err(|e| invalid(first, e))?;
        let seed = redis::IntoConnectionInfo::into_connection_info(first.as_str())
            .map_err(|e| invalid(first, e))?;
        let wakeups = Wakeups::new(|push| {
            builder()
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(push)
                .build()
                .map(|client| Conn::Cluster(LazyCluster::new(client, seed.clone())))
        })?;
        let writes = Conn::Cluster(LazyCluster::new(client.clone(), seed.clone()));
        Ok((
            Conn::Cluster(LazyCluster::new(client, seed)),
            writes,
            wakeups,
        ))
    }
}
