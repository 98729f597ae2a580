//! Test support: real `redis-server` processes on free loopback ports, which tests can kill
//! and restart, and helpers to inspect what the cache stored.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cached_redis::Cache;

mod held;
mod proxy;
mod sentinel;
pub use held::{Answered, HeldLoad, timed_read};
pub use proxy::Proxy;
pub use sentinel::{MASTER, RedisSentinel};

/// A `redis-server` owned by one test, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    extra_args: Vec<String>,
    tls: bool,
}

/// Sets `key` to `value` with a TTL of `millis`, as another process's lease would be.
pub async fn set_px(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    value: &str,
    millis: u64,
) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("PX")
        .arg(millis)
        .query_async(conn)
        .await
        .expect("SET PX");
}

/// How many clients are subscribed to `channel` (`PUBSUB NUMSUB`).
pub async fn numsub(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> u64 {
    let reply: (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await
        .expect("PUBSUB NUMSUB");
    reply.1
}

/// A CA and a server certificate for `127.0.0.1`, made with `openssl` for one test.
#[derive(Debug)]
pub struct TlsFiles {
    dir: std::path::PathBuf,
}

impl TlsFiles {
    /// Generates the CA and the server key and certificate in a fresh directory.
    pub fn generate() -> TlsFiles {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cached-redis-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let run = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl is not on PATH (Debian: apt-get install openssl)");
            assert!(status.success(), "openssl {args:?} failed");
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=cached-redis test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ]);
        TlsFiles { dir }
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("ca.crt")).expect("ca.crt")
    }

    fn server_args(&self) -> Vec<String> {
        let path = |f: &str| self.dir.join(f).to_string_lossy().into_owned();
        vec![
            "--tls-cert-file".into(),
            path("server.crt"),
            "--tls-key-file".into(),
            path("server.key"),
            "--tls-ca-cert-file".into(),
            path("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that refuses connections for as long as this lives: bound by a socket that
/// never listens, so no other test can take it meanwhile.
#[derive(Debug)]
pub struct RefusingPort {
    _socket: tokio::net::TcpSocket,
    port: u16,
}

impl RefusingPort {
    /// Binds a free loopback port without listening on it.
    pub fn new() -> RefusingPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
        let port = socket.local_addr().expect("address").port();
        RefusingPort {
            _socket: socket,
            port,
        }
    }

    /// `redis://127.0.0.1:<port>`: every connection to it is refused.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Default for RefusingPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

impl RedisServer {
    /// Starts a fresh, empty server on a free port.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra command-line arguments (e.g. `--requirepass`).
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        let extra_args: Vec<String> = extra_args.iter().map(|s| (*s).to_owned()).collect();
        Self::start_on_free_port(extra_args, false)
    }

    /// Starts a server that speaks only TLS, with `files`' certificate.
    pub fn start_tls(files: &TlsFiles) -> RedisServer {
        Self::start_on_free_port(files.server_args(), true)
    }

    fn start_on_free_port(extra_args: Vec<String>, tls: bool) -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port, &extra_args, tls) {
                return RedisServer {
                    port,
                    child: Some(child),
                    extra_args,
                    tls,
                };
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to clients). Its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process (SIGSTOP): its port still accepts connections, which never answer, and
    /// as a replica it stops acknowledging its primary.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Continues a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Makes this server a replica of the primary on loopback `port` (the primary's, or a
    /// proxy's in front of it) and waits until it has synced.
    pub async fn replicate(&self, port: u16) {
        let mut conn = self.conn().await;
        let _: () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(port)
            .query_async(&mut conn)
            .await
            .expect("REPLICAOF");
        let synced = eventually(Duration::from_secs(10), || {
            let mut conn = conn.clone();
            async move {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                info.contains("master_link_status:up")
            }
        })
        .await;
        assert!(synced, "the replica synced with its primary");
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = spawn(self.port, &self.extra_args, self.tls) {
                self.child = Some(child);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A plain connection for inspecting what the cache stored.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("valid url")
            .get_multiplexed_async_connection()
            .await
            .expect("test redis reachable")
    }

    /// A cache on this server for tests of behaviour with Redis healthy: its `op_timeout` is
    /// generous, so a busy machine's slow reply is never taken for an outage (which would turn
    /// a hit into a fallback and break an exact count). Outage tests build their own.
    pub async fn cache(&self, namespace: &str) -> Cache {
        Cache::builder(&self.url())
            .namespace(namespace)
            .op_timeout(Duration::from_secs(5))
            .build()
            .await
            .expect("valid cache configuration")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `redis-server` and waits for its "Ready to accept connections" line. `None` if it
/// exited first (the port was taken).
fn spawn(port: u16, extra_args: &[String], tls: bool) -> Option<Child> {
    let port = port.to_string();
    let ports = if tls {
        ["--port", "0", "--tls-port", &port]
    } else {
        ["--port", &port, "--tls-port", "0"]
    };
    let mut child = match Command::new("redis-server")
        .args(ports)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--loglevel", "notice", "--logfile", ""])
        // A replica writes the dataset it syncs to disk: keep that out of the work tree.
        .arg("--dir")
        .arg(std::env::temp_dir())
        .args(["--dbfilename", &format!("cached-redis-test-{port}.rdb")])
        .args(extra_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server is not on PATH; install it (Debian/Ubuntu: `apt-get install redis-server`, macOS: `brew install redis`)"
        ),
        Err(e) => panic!("could not start redis-server: {e}"),
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("Ready to accept connections"));
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Some(child)
}

/// The PTTL of a key in milliseconds (-2 when absent).
pub async fn pttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(conn)
        .await
        .expect("PTTL")
}

/// The raw bytes stored at a key.
pub async fn get_raw(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .expect("GET")
}

/// Every key matching `pattern`, sorted, by `SCAN` in batches (never `KEYS`).
pub async fn scan_keys(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys
}

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
            .map(|i| {
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
                    &dir_arg,
                ])
            })
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

    /// `redis://127.0.0.1:<port>` of every node still running.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(RedisServer::url)
            .collect()
    }

    /// Ports of the running primaries.
    pub fn primaries(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
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
            .filter(|n| n.child.is_some() && n.port() != port)
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
            let healthy = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
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

/// What the `cached-redis-child` processes of a stampede reported.
#[derive(Debug)]
pub struct Stampede {
    /// Loader runs, summed over the processes.
    pub loads: u64,
    /// Loader runs in each process.
    pub loads_per_process: Vec<u64>,
    /// Every caller's latency from the common start, in milliseconds, sorted.
    pub latencies_ms: Vec<f64>,
}

/// Starts `processes` copies of the `cached-redis-child` binary at `child` (pass
/// `env!("CARGO_BIN_EXE_cached-redis-child")`), waits until each is ready, releases them
/// together, and collects their reports: each runs `tasks` concurrent reads of the cold key
/// `id` with a loader of `loader_ms`. Every caller must have received the right value.
pub async fn stampede_in_processes(
    child: &str,
    url: &str,
    namespace: &str,
    id: u64,
    (processes, tasks, loader_ms): (usize, usize, u64),
) -> Stampede {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let mut children = Vec::new();
    for _ in 0..processes {
        let mut process = tokio::process::Command::new(child)
            .args([
                url,
                namespace,
                &id.to_string(),
                &tasks.to_string(),
                &loader_ms.to_string(),
                "5000",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn cached-redis-child");
        let mut lines = BufReader::new(process.stdout.take().expect("stdout")).lines();
        assert_eq!(
            lines.next_line().await.expect("child output").as_deref(),
            Some("ready")
        );
        children.push((process, lines));
    }
    for (process, _) in &mut children {
        let stdin = process.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").await.expect("release the child");
    }
    let mut stampede = Stampede {
        loads: 0,
        loads_per_process: Vec::new(),
        latencies_ms: Vec::new(),
    };
    for (mut process, mut lines) in children {
        let line = lines
            .next_line()
            .await
            .expect("child output")
            .expect("child report");
        let report: serde_json::Value = serde_json::from_str(&line).expect("child report is JSON");
        assert_eq!(
            report["values_ok"], true,
            "a caller got a wrong value: {report}"
        );
        let loads = report["loads"].as_u64().expect("loads");
        stampede.loads += loads;
        stampede.loads_per_process.push(loads);
        let latencies = report["latencies_ms"].as_array().expect("latencies");
        stampede
            .latencies_ms
            .extend(latencies.iter().filter_map(serde_json::Value::as_f64));
        assert!(process.wait().await.expect("child exit").success());
    }
    stampede.latencies_ms.sort_by(f64::total_cmp);
    stampede
}
