//! A TCP proxy in front of a `redis-server` whose connections' replies can be held, to widen
//! race windows deterministically (a SUBSCRIBE that reached Redis but whose reply has not
//! reached the client, a subscriber connection that black-holes), or delayed, to stand for a
//! server far away or loaded (a sentinel that answers 150 ms late).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Forwards loopback connections to a server; dropped, it closes them all.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    /// Per connection, in accept order: whether its replies are held.
    held: Arc<Mutex<Vec<watch::Sender<bool>>>>,
    /// Per connection, in accept order: the local port of its connection to the server (the
    /// client's port in the server's `CLIENT LIST`).
    upstream_ports: Arc<Mutex<Vec<u16>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding a free loopback port to `upstream_port`.
    pub async fn start(upstream_port: u16) -> Proxy {
        Self::start_delayed(upstream_port, Duration::ZERO).await
    }

    /// The same, passing on what the server sends only `delay` after it arrives (each read
    /// from the server, in order): every reply, the handshake's included, comes that late.
    pub async fn start_delayed(upstream_port: u16, delay: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let held: Arc<Mutex<Vec<watch::Sender<bool>>>> = Arc::default();
        let upstream_ports: Arc<Mutex<Vec<u16>>> = Arc::default();
        let accepting = tokio::spawn(accept(
            listener,
            upstream_port,
            delay,
            held.clone(),
            upstream_ports.clone(),
        ));
        Proxy {
            port,
            held,
            upstream_ports,
            accepting,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// The connection (in accept order) whose connection to the server has local port `port`,
    /// if it is one of this proxy's (the newest, should a port be reused): how a client in the
    /// server's `CLIENT LIST` is found here.
    pub fn connection_from_port(&self, port: u16) -> Option<usize> {
        let ports = self.upstream_ports.lock().unwrap();
        ports.iter().rposition(|&p| p == port)
    }

    /// The connection (in accept order) of the first client in `redis`'s `CLIENT LIST` for
    /// which `client` holds (given its `name=value` fields) that is one of this proxy's.
    pub async fn connection_of_client(
        &self,
        redis: &mut redis::aio::MultiplexedConnection,
        client: impl Fn(&[&str]) -> bool,
    ) -> Option<usize> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(redis)
            .await
            .unwrap();
        list.lines()
            .map(|line| line.split(' ').collect::<Vec<_>>())
            .filter(|fields| client(fields))
            .filter_map(|fields| {
                fields
                    .iter()
                    .find_map(|f| f.strip_prefix("addr=")?.rsplit(':').next()?.parse().ok())
            })
            .find_map(|port| self.connection_from_port(port))
    }

    /// A cache through this proxy built from `builder`, and this proxy's index of its writes
    /// connection: the client whose last command was the write-back script of a first miss
    /// (of the key `warm`), found in `admin`'s `CLIENT LIST`.
    pub async fn cache_and_writes(
        &self,
        admin: &mut redis::aio::MultiplexedConnection,
        builder: cached_redis::CacheBuilder,
    ) -> (cached_redis::Cache, usize) {
        let cache = builder.build().await.expect("valid cache configuration");
        let policy = cached_redis::Policy::new("warm", Duration::from_secs(60)).unwrap();
        let warm: Result<u64, String> = cache
            .fetch(&cached_redis::Key::raw("warm"), &policy, async { Ok(0) })
            .await;
        assert_eq!(warm, Ok(0));
        cache.settle().await;
        let wrote = |fields: &[&str]| fields.contains(&"cmd=evalsha");
        let writes = self.connection_of_client(admin, wrote).await;
        (cache, writes.expect("the writes connection"))
    }

    /// A first call of `key` through `cache` that loads `value` and, while loading, holds the
    /// replies of `cache`'s writes connection (`writes`, as [`Proxy::cache_and_writes`] finds
    /// it): the caller is answered, its write-back reaches Redis, and the write-back's reply
    /// waits for [`Proxy::release_replies`].
    pub async fn miss_holding_write_back(
        &self,
        cache: &cached_redis::Cache,
        writes: usize,
        key: &cached_redis::Key,
        value: u64,
    ) -> Result<u64, String> {
        let policy = cached_redis::Policy::new("held-write-back", Duration::from_secs(60)).unwrap();
        let load = async {
            self.hold_replies(writes);
            Ok(value)
        };
        cache.fetch(key, &policy, load).await
    }

    /// Keeps what the server sends on connection `index` (in accept order) from the client
    /// until [`Proxy::release_replies`]; requests still reach the server.
    pub fn hold_replies(&self, index: usize) {
        self.held.lock().unwrap()[index].send_replace(true);
    }

    /// Lets connection `index`'s replies through again, held ones first.
    pub fn release_replies(&self, index: usize) {
        self.held.lock().unwrap()[index].send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept(
    listener: TcpListener,
    upstream_port: u16,
    delay: Duration,
    held: Arc<Mutex<Vec<watch::Sender<bool>>>>,
    upstream_ports: Arc<Mutex<Vec<u16>>>,
) {
    let mut pumps = JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
            continue;
        };
        let (hold, holding) = watch::channel(false);
        // The port becomes visible (its lock released) only once the connection can be held.
        let mut ports = upstream_ports.lock().unwrap();
        ports.push(server.local_addr().map_or(0, |a| a.port()));
        held.lock().unwrap().push(hold);
        drop(ports);
        let (mut client_read, client_write) = client.into_split();
        let (server_read, mut server_write) = server.into_split();
        pumps.spawn(async move {
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        });
        pumps.spawn(replies(server_read, client_write, delay, holding));
    }
}

/// Copies the server's bytes to the client, `delay` after they arrive, waiting while they are
/// held.
async fn replies(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    mut holding: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if holding.wait_for(|held| !held).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
