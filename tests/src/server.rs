//! `redis-server` processes owned by one test on free loopback ports, which tests kill, pause,
//! restart and make replicas; and a port that refuses connections.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cached_redis::Cache;

use crate::{TlsFiles, eventually};

/// A `redis-server` owned by one test, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    extra_args: Vec<String>,
    tls: bool,
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

    /// Whether the process runs (it was not killed, or was restarted since).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
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

    /// A plain connection for inspecting what the cache stored. Its replies may take up to
    /// 30 s (redis-rs's default is 500 ms): a test that writes 50 MB behind the cache's back
    /// on a loaded machine must not time out itself.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let patient =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        redis::Client::open(self.url())
            .expect("valid url")
            .get_multiplexed_async_connection_with_config(&patient)
            .await
            .expect("test redis reachable")
    }

    /// A cache on this server in `namespace`, with a generous `op_timeout` (5 s) so that a
    /// loaded machine does not turn a test's Redis calls into fallbacks. In the suite's near
    /// pass ([`near_pass`](crate::near_pass)) its near cache is live when it is returned.
    pub async fn cache(&self, namespace: &str) -> Cache {
        let cache = self
            .cache_builder(namespace)
            .build()
            .await
            .expect("valid cache configuration");
        if crate::near_pass() {
            crate::near_live(&cache).await;
        }
        cache
    }

    /// The builder behind [`RedisServer::cache`], for a test that sets more options. In the
    /// suite's near pass ([`near_pass`](crate::near_pass)) every function of the cache keeps
    /// its values near.
    pub fn cache_builder(&self, namespace: &str) -> cached_redis::CacheBuilder {
        crate::in_the_near_pass(
            Cache::builder(&self.url())
                .namespace(namespace)
                .op_timeout(Duration::from_secs(5)),
        )
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
