//! Guarantee 3: `invalidate_*` removes the entry and revokes in-flight loads. A load that read
//! the database before a write and finishes after its invalidation does not store its stale
//! value, and no read that starts after `invalidate_*` returned sees a value from before it,
//! in this process or another. (Plain GET / load / SET fails both.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cached_redis::{Cache, redis_cached};
use cached_redis_tests::{RedisServer, eventually, get_raw};
use tokio::sync::{Notify, Semaphore};

/// A database row whose next read can be held between reading and returning.
struct Db {
    version: AtomicU64,
    reads: AtomicU64,
    hold_next_read: AtomicBool,
    read_started: Notify,
    release: Semaphore,
}

impl Db {
    fn new() -> Arc<Db> {
        Arc::new(Db {
            version: AtomicU64::new(1),
            reads: AtomicU64::new(0),
            hold_next_read: AtomicBool::new(false),
            read_started: Notify::new(),
            release: Semaphore::new(0),
        })
    }
}

struct Repo {
    cache: Cache,
    db: Arc<Db>,
}

impl Repo {
    /// Reads the row's version through the cache.
    #[redis_cached(key = "row:<id>", ttl = "60s", cache = &self.cache)]
    async fn version(&self, id: u32) -> Result<u64, String> {
        let _ = id;
        let version = self.db.version.load(Ordering::SeqCst);
        self.db.reads.fetch_add(1, Ordering::SeqCst);
        if self.db.hold_next_read.swap(false, Ordering::SeqCst) {
            self.db.read_started.notify_one();
            let _permit = self.db.release.acquire().await.map_err(|e| e.to_string())?;
        }
        Ok(version)
    }

    /// A write path: update the row, then invalidate.
    async fn write(&self, id: u32, version: u64) -> Result<bool, cached_redis::Error> {
        self.db.version.store(version, Ordering::SeqCst);
        self.invalidate_version(id).await
    }
}

async fn repo(server: &RedisServer, db: &Arc<Db>) -> Repo {
    Repo {
        cache: server.cache("inval").await,
        db: db.clone(),
    }
}

/// Starts a read whose database read happens now and whose return is held until `release`.
async fn start_held_read(repo: &Arc<Repo>) -> tokio::task::JoinHandle<Result<u64, String>> {
    repo.db.hold_next_read.store(true, Ordering::SeqCst);
    let read_started = repo.db.read_started.notified();
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
    let db = Db::new();
    let repo = repo(&server, &db).await;
    assert_eq!(repo.version(1).await, Ok(1));
    assert!(repo.write(1, 2).await.unwrap(), "an entry was removed");
    assert!(
        !repo.invalidate_version(1).await.unwrap(),
        "nothing left to remove"
    );
    assert_eq!(repo.version(1).await, Ok(2));
    assert_eq!(db.reads.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_raced_an_invalidation_does_not_store_its_stale_value() {
    let server = RedisServer::start();
    let db = Db::new();
    let repo = Arc::new(repo(&server, &db).await);

    let stale_read = start_held_read(&repo).await; // read version 1 from the database
    repo.write(1, 2).await.unwrap(); // version 2 written and invalidated
    db.release.add_permits(1);
    assert_eq!(
        stale_read.await.unwrap(),
        Ok(1),
        "its own caller started before the write"
    );

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
    let db = Db::new();
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
    db.release.add_permits(1);
    assert_eq!(stale_read.await.unwrap(), Ok(1));
    assert_eq!(
        late_read.await.unwrap(),
        Ok(2),
        "a read after the invalidation sees the write"
    );
    assert_eq!(db.reads.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_in_another_process_after_the_invalidation_sees_the_write() {
    let server = RedisServer::start();
    let db = Db::new();
    let here = Arc::new(repo(&server, &db).await);
    let there = repo(&server, &db).await; // its own cache: like another process

    let stale_read = start_held_read(&here).await; // holds the lease with version 1
    here.write(1, 2).await.unwrap(); // revokes that lease
    assert_eq!(
        there.version(1).await,
        Ok(2),
        "no waiting on a revoked lease, no stale value"
    );
    db.release.add_permits(1);
    assert_eq!(stale_read.await.unwrap(), Ok(1));
    assert_eq!(here.cache.stats().stale_refused, 1);
    assert_eq!(
        here.version(1).await,
        Ok(2),
        "the stored value is the fresh one"
    );
    assert_eq!(there.version(1).await, Ok(2));
    assert_eq!(db.reads.load(Ordering::SeqCst), 2);
}
