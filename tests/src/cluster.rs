//! Local Redis Clusters: six `redis-server --cluster-enabled yes` processes joined with
//! `redis-cli --cluster create`, one at a time per test binary.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::RedisServer;

/// Held for the length of a test that starts a cluster: one cluster at a time in a test
/// binary. Six nodes gossip with a one-second node timeout; several clusters at once on two
/// cores starve that gossip into failovers no test asked for, and slow the ones it did.
pub async fn one_cluster_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ALONE.lock().await
}

/// A local Redis Cluster of `redis-server --cluster-enabled yes` processes: three primaries,
/// each with `replicas` replicas, joined with `redis-cli --cluster create`. Killed when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    /// Starts three primaries and three replicas, and waits until the cluster is healthy.
    pub fn start() -> RedisCluster {
        Self::start_with_replicas(1)
    }

    /// Starts three primaries with `replicas` replicas each.
    pub fn start_with_replicas(replicas: usize) -> RedisCluster {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("cached-redis-cluster-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let dir_arg = dir.to_string_lossy().into_owned();
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|i| cluster_node(&dir_arg, i))
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is not on PATH (it comes with redis-server: apt-get install redis-server)");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes, dir };
        cluster.wait_healthy(Duration::from_secs(20));
        cluster
    }

    /// Adds a primary that serves no slot yet (`CLUSTER MEET`), as a reshard onto a new node
    /// begins, and waits until every running node knows it and it knows every slot's owner.
    /// Returns its port.
    pub fn add_empty_primary(&mut self) -> u16 {
        let dir = self.dir.to_string_lossy().into_owned();
        let node = cluster_node(&dir, self.nodes.len());
        let port = node.port();
        let first = self.primaries()[0].to_string();
        assert!(cli(port, &["CLUSTER", "MEET", "127.0.0.1", &first]).contains("OK"));
        self.nodes.push(node);
        let deadline = Instant::now() + Duration::from_secs(20);
        let needle = format!(":{port}@");
        let known = |p: &u16| cli(*p, &["CLUSTER", "NODES"]).contains(&needle);
        let settled = || cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok");
        while !(self.primaries().iter().all(known) && settled()) {
            assert!(Instant::now() < deadline, "the new node joined the cluster");
            std::thread::sleep(Duration::from_millis(50));
        }
        port
    }

    /// `redis://127.0.0.1:<port>` of every node still running.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(RedisServer::url)
            .collect()
    }

    /// Ports of the running primaries.
    pub fn primaries(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .filter(|n| cli(n.port(), &["ROLE"]).lines().next() == Some("master"))
            .map(RedisServer::port)
            .collect()
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == port) {
            node.kill();
        }
    }

    /// The running primary that holds `key`, if any does.
    pub fn primary_holding(&self, key: &str) -> Option<u16> {
        self.primaries()
            .into_iter()
            .find(|port| cli(*port, &["EXISTS", key]).trim() == "1")
    }

    /// The running replica of the primary on `port`.
    pub fn replica_of(&self, port: u16) -> Option<u16> {
        let id = cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
        self.nodes
            .iter()
            .filter(|n| n.is_running() && n.port() != port)
            .map(RedisServer::port)
            .find(|p| {
                cli(*p, &["CLUSTER", "NODES"])
                    .lines()
                    .any(|l| l.contains("myself") && l.contains(&id))
            })
    }

    /// The node on `port`, to pause, resume or kill.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("a node of this cluster")
    }

    /// Runs `redis-cli -p <port> <args>` against a node and returns its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(port, args)
    }

    /// The number of keys on the node at `port`.
    pub fn dbsize(&self, port: u16) -> u64 {
        cli(port, &["DBSIZE"]).trim().parse().unwrap_or(0)
    }

    /// Waits until every running node reports `cluster_state:ok`, every slot is served, and
    /// every replica's link to its primary is up.
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let healthy = self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let info = cli(n.port(), &["CLUSTER", "INFO"]);
                let replication = cli(n.port(), &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy in {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `redis-cli -p <port> <args>` and returns its output.
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// One `redis-server --cluster-enabled yes` node, its config file the `i`th in `dir`.
fn cluster_node(dir: &str, i: usize) -> RedisServer {
    let config = format!("nodes-{i}.conf");
    RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        &config,
        "--cluster-node-timeout",
        "1000",
        "--cluster-replica-validity-factor",
        "0",
        "--dir",
        dir,
    ])
}
