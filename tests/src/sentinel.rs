//! A Redis Sentinel (`redis-server <conf> --sentinel`) on a free loopback port, monitoring one
//! primary as `mymaster` with a 1 s down-after, killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{eventually, free_port};

/// The master name the test sentinels monitor.
pub const MASTER: &str = "mymaster";

/// One sentinel process and its config file (sentinels rewrite theirs).
#[derive(Debug)]
pub struct RedisSentinel {
    port: u16,
    child: Child,
    config: std::path::PathBuf,
}

impl RedisSentinel {
    /// Starts a sentinel monitoring the primary on `primary_port` (quorum 1), and waits until
    /// it knows the primary.
    pub async fn start(primary_port: u16) -> RedisSentinel {
        Self::start_with_auth(primary_port, None).await
    }

    /// The same, for data nodes that require `password` (`sentinel auth-pass`).
    pub async fn start_with_auth(primary_port: u16, password: Option<&str>) -> RedisSentinel {
        let port = free_port();
        let auth = password.map_or(String::new(), |p| {
            format!("sentinel auth-pass {MASTER} {p}\n")
        });
        let config = std::env::temp_dir().join(format!(
            "cached-redis-sentinel-{}-{port}.conf",
            std::process::id()
        ));
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor {MASTER} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 3000\nsentinel parallel-syncs {MASTER} 1\n{auth}"
            ),
        )
        .expect("sentinel config");
        let mut child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .args(["--loglevel", "notice", "--logfile", ""])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("+monitor master"));
        assert!(ready, "the sentinel started monitoring");
        std::thread::spawn(move || lines.for_each(drop));
        let sentinel = RedisSentinel {
            port,
            child,
            config,
        };
        let knows = eventually(Duration::from_secs(10), || async {
            sentinel.primary_port().await == Some(primary_port)
        })
        .await;
        assert!(knows, "the sentinel names the primary");
        sentinel
    }

    /// The port it listens on (for a [`Proxy`](crate::Proxy) in front of it).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port of the primary the sentinel names now.
    pub async fn primary_port(&self) -> Option<u16> {
        let mut conn = redis::Client::open(self.url())
            .ok()?
            .get_multiplexed_async_connection()
            .await
            .ok()?;
        let address: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(MASTER)
            .query_async(&mut conn)
            .await
            .ok()?;
        address.map(|(_, port)| port)
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}
