//! Guarantee 3: `invalidate_*` removes the entry and revokes in-flight loads. A load that read
//! the database before a write and finishes after its invalidation does not store its stale
//! value, and no read that starts after `invalidate_*` returned sees a value from before it,
//! in this process or another. (Plain GET / load / SET fails both.)

use std::sync::Arc;
use std::time::Duration;

use cached_redis::{Cache, redis_cached};
use cached_redis_tests::{HeldDb, RedisServer, eventually, get_raw};
use tokio::sync::Notify;

/// A database row whose next read can be held between reading and returning.
/// The row behind the cache, at version 1.
fn db() -> Arc<HeldDb> {
    Arc::new(HeldDb::new(1))
}

struct Repo {
    cache: Cache,
    db: Arc<HeldDb>,
}

impl Repo {
    /// Reads the row's version through the cache.
    #[redis_cached(key = "row:<id>", ttl = "60s", cache = &self.cache)]
    async fn version(&self, id: u32) -> Result<u64, String> {
        let _ = id;
        self.db.read().await
    }

    /// A write path: update the row, then invalidate.
    async fn write(&self, id: u32, version: u64) -> Result<bool, cached_redis::Error> {
        self.db.set_version(version);
        self.invalidate_version(id).await
    }
}

async fn repo(server: &RedisServer, db: &Arc<HeldDb>) -> Repo {
    Repo {
        cache: server.cache("inval").await,
        db: db.clone(),
    }
}

/// Starts a read whose database read happens now and whose return is held until `release`.
async fn start_held_read(repo: &Arc<Repo>) -> tokio::task::JoinHandle<Result<u64, String>> {
    let read_started = repo.db.hold_next_read();
    let task = {
        let repo = repo.clone();
        tokio::spawn(async move { repo.version(1).await })
    };
    read_started.await;
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_removes_the_entry_and_reports_it() {
    let server = RedisServer::start();
    let db = db();
    let repo = repo(&server, &db).await;
    assert_eq!(repo.version(1).await, Ok(1));
    repo.cache.settle().await;
    assert!(repo.write(1, 2).await.unwrap(), "an entry was removed");
    assert!(
        !repo.invalidate_version(1).await.unwrap(),
        "nothing left to remove"
    );
    assert_eq!(repo.version(1).await, Ok(2));
    assert_eq!(db.reads(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_raced_an_invalidation_does_not_store_its_stale_value() {
    let server = RedisServer::start();
    let db = db();
    let repo = Arc::new(repo(&server, &db).await);

    let stale_read = start_held_read(&repo).await; // read version 1 from the database
    repo.write(1, 2).await.unwrap(); // version 2 written and invalidated
    db.release();
    assert_eq!(
        stale_read.await.unwrap(),
        Ok(1),
        "its own caller started before the write"
    );

    repo.cache.settle().await;
    let mut conn = server.conn().await;
    let key = repo.cache.redis_key(&cached_redis::Key::raw("row:1"));
    assert_eq!(
        get_raw(&mut conn, &key).await,
        None,
        "the stale write-back was refused"
    );
    assert_eq!(repo.cache.stats().stale_refused, 1);
    assert_eq!(repo.version(1).await, Ok(2), "the next read reloads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_joined_a_revoked_load_reads_again() {
    let server = RedisServer::start();
    let db = db();
    let repo = Arc::new(repo(&server, &db).await);

    let stale_read = start_held_read(&repo).await;
    repo.write(1, 2).await.unwrap();
    // Starts after the invalidation returned, and joins the load still in flight.
    let late_read = {
        let repo = repo.clone();
        tokio::spawn(async move { repo.version(1).await })
    };
    assert!(
        eventually(Duration::from_secs(2), || async {
            repo.cache.stats().coalesced == 1
        })
        .await
    );
    db.release();
    assert_eq!(stale_read.await.unwrap(), Ok(1));
    assert_eq!(
        late_read.await.unwrap(),
        Ok(2),
        "a read after the invalidation sees the write"
    );
    assert_eq!(db.reads(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_in_another_process_after_the_invalidation_sees_the_write() {
    let server = RedisServer::start();
    let db = db();
    let here = Arc::new(repo(&server, &db).await);
    let there = repo(&server, &db).await; // its own cache: like another process

    let stale_read = start_held_read(&here).await; // holds the lease with version 1
    here.write(1, 2).await.unwrap(); // revokes that lease
    assert_eq!(
        there.version(1).await,
        Ok(2),
        "no waiting on a revoked lease, no stale value"
    );
    db.release();
    assert_eq!(stale_read.await.unwrap(), Ok(1));
    here.cache.settle().await;
    assert_eq!(here.cache.stats().stale_refused, 1);
    assert_eq!(
        here.version(1).await,
        Ok(2),
        "the stored value is the fresh one"
    );
    assert_eq!(there.version(1).await, Ok(2));
    assert_eq!(db.reads(), 2);
}

/// A value whose decoding can be held open: the window between the lease script's reply and the
/// leader sharing what it decoded, which a multi-megabyte value widens, held deterministically.
#[derive(Debug, PartialEq, serde::Serialize)]
struct SlowToDecode(u64);

/// Armed by a test: the next decode of a [`SlowToDecode`] signals [`DECODE_HELD`] and blocks
/// until the sender of this receiver sends (or is dropped).
static HOLD_NEXT_DECODE: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>> =
    std::sync::Mutex::new(None);
static DECODE_HELD: Notify = Notify::const_new();

impl<'de> serde::Deserialize<'de> for SlowToDecode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let version = <u64 as serde::Deserialize>::deserialize(d)?;
        let held = HOLD_NEXT_DECODE.lock().unwrap().take();
        if let Some(release) = held {
            DECODE_HELD.notify_one();
            let _ = release.recv();
        }
        Ok(SlowToDecode(version))
    }
}

/// Item 2 of the hardening issue: the leader's lease script finds a value another process just
/// stored; before the leader shares it, the entry is invalidated and a new read starts here.
/// That read must not be handed the value from before the invalidation.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_read_after_the_invalidation_is_not_handed_a_value_read_before_it() {
    let server = RedisServer::start();
    let here = server.cache("joined").await;
    let there = server.cache("joined").await; // its own flights: like another process
    let key = cached_redis::Key::raw("row:1");
    let policy = cached_redis::Policy::new("row", Duration::from_secs(60)).unwrap();

    // Another process holds the lease while it loads version 1.
    let (store_v1, v1_loaded) = tokio::sync::oneshot::channel::<()>();
    let there_load = {
        let (there, key, policy) = (there.clone(), key.clone(), policy);
        tokio::spawn(async move {
            let loader = async {
                let _ = v1_loaded.await;
                Ok::<_, String>(SlowToDecode(1))
            };
            there.fetch(&key, &policy, loader).await
        })
    };
    let conn = server.conn().await;
    let lease = format!("{}:lease", here.redis_key(&key));
    assert!(
        eventually(Duration::from_secs(5), || {
            let (mut conn, lease) = (conn.clone(), lease.clone());
            async move { get_raw(&mut conn, &lease).await.is_some() }
        })
        .await
    );
    // Here, a caller leads the local load and waits for that lease.
    let early = {
        let (here, key, policy) = (here.clone(), key.clone(), policy);
        tokio::spawn(async move {
            let loader = async { Ok::<_, String>(SlowToDecode(0)) };
            here.fetch(&key, &policy, loader).await
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            here.stats().lock_waits == 1
        })
        .await
    );

    // Version 1 is stored; the waiting leader's lease script reads it and decodes it, held.
    let (release_decode, held) = std::sync::mpsc::channel();
    *HOLD_NEXT_DECODE.lock().unwrap() = Some(held);
    store_v1.send(()).unwrap();
    assert_eq!(there_load.await.unwrap(), Ok(SlowToDecode(1)));
    DECODE_HELD.notified().await;

    // Version 2 is written and invalidated; a read that starts afterwards joins the local load.
    assert!(there.invalidate(&key).await.unwrap());
    let late = {
        let (here, key, policy) = (here.clone(), key.clone(), policy);
        tokio::spawn(async move {
            let loader = async { Ok::<_, String>(SlowToDecode(2)) };
            here.fetch(&key, &policy, loader).await
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            here.stats().coalesced == 1
        })
        .await
    );
    release_decode.send(()).unwrap();

    assert_eq!(
        early.await.unwrap(),
        Ok(SlowToDecode(1)),
        "it started before the invalidation"
    );
    assert_eq!(
        late.await.unwrap(),
        Ok(SlowToDecode(2)),
        "a read that starts after invalidate returned sees the write"
    );
}
