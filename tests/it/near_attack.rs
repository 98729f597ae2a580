//! The near cache attacked (`guide/near.md`): each test states the guarantee it attacks, and
//! each failed before its fix. (`SWAPDB`, which Redis reports to no tracking client, and a
//! value with interior mutability shared by near hits are stated in the guide instead.)
//!
//! Race windows are widened deterministically with hooks in this test binary, never with
//! sleeps: a global allocator that parks one chosen thread on one chosen allocation, and a
//! value type whose `Drop` parks when armed (a large value's deallocation takes as long).

#![allow(missing_docs, unreachable_pub)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key, Policy, redis_cached};
use cached_redis_tests::{HeldDb, RedisServer, eventually, near_cache, until_near_hit};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Hooks

/// Delegates to `System`; parks the thread marked [`HOOKED_THREAD`] on its next allocation of
/// exactly [`PARK_ON_SIZE`] bytes, until [`ALLOC_RELEASE`].
struct ParkingAlloc;

#[global_allocator]
static ALLOC: ParkingAlloc = ParkingAlloc;

static PARK_ON_SIZE: AtomicUsize = AtomicUsize::new(0);
static ALLOC_PARKED: AtomicBool = AtomicBool::new(false);
static ALLOC_RELEASE: AtomicBool = AtomicBool::new(false);

thread_local! {
    static HOOKED_THREAD: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for ParkingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = PARK_ON_SIZE.load(Ordering::Relaxed);
        if size != 0
            && layout.size() == size
            && HOOKED_THREAD.try_with(Cell::get).unwrap_or(false)
            && PARK_ON_SIZE
                .compare_exchange(size, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            ALLOC_PARKED.store(true, Ordering::SeqCst);
            while !ALLOC_RELEASE.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// A cached value whose `Drop` parks (when armed) if it is version [`DROP_PARK_VERSION`]:
/// what freeing a large value does to the thread that drops it, made indefinite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Probe {
    version: u64,
    pad: [u64; 31],
    more: [u64; 3],
}

impl Probe {
    fn new(version: u64) -> Probe {
        Probe {
            version,
            pad: [0; 31],
            more: [0; 3],
        }
    }
}

static DROP_PARK_VERSION: AtomicU64 = AtomicU64::new(0);
static DROP_PARKED: AtomicBool = AtomicBool::new(false);
static DROP_RELEASE: AtomicBool = AtomicBool::new(false);

impl Drop for Probe {
    fn drop(&mut self) {
        let armed = DROP_PARK_VERSION.load(Ordering::SeqCst);
        if armed != 0
            && armed == self.version
            && DROP_PARK_VERSION
                .compare_exchange(armed, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            DROP_PARKED.store(true, Ordering::SeqCst);
            while !DROP_RELEASE.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
        }
    }
}

/// The size of the allocation `Arc::new(probe)` makes (an `ArcInner<Probe>`).
fn arc_probe_size() -> usize {
    let (layout, _) = Layout::new::<[usize; 2]>()
        .extend(Layout::new::<Probe>())
        .unwrap();
    layout.pad_to_align().size()
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Waits until every invalidation Redis sent before now has been applied by `cache`.
async fn applied(cache: &Cache) {
    let at = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || async {
            cached_redis::__private::near_applied_since(cache, at)
        })
        .await,
        "the tracking connection confirmed"
    );
}

#[redis_cached(key = "row:<id>", ttl = "60s", near = "30s", cache = cache)]
async fn row(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// Calls `row` until a call is a near hit (the write-back's own message may drop the first
/// copy).
async fn warm(cache: &Cache, db: &HeldDb, id: u32) -> u64 {
    let first = row(cache, db, id).await.unwrap(); // a miss: loaded and written back
    until_near_hit(cache, || async {
        assert_eq!(row(cache, db, id).await, Ok(first))
    })
    .await;
    first
}

// ---------------------------------------------------------------------------------------------
// 1. The keep's check-then-insert window: a reply that an invalidation overtook is kept (and
//    served) for as long as the keeping thread is held between its insert and its re-check.

/// Guarantee attacked: "A reply that an invalidation overtook is never kept" and "this
/// process's own writes drop its copy before they return".
///
/// `Near::keep` checks the ticket, inserts, then checks again and removes its own copy; `get`
/// checks only the epoch, not the stripe. An invalidation applied after the first check but
/// before the insert finds nothing to remove; the stale copy is then visible to every `get`
/// until the keeping thread reaches its second check. Here that thread is held (1) on the
/// `Arc::new` of the copy (a preemption) and (2) while the insert drops the copy it replaces
/// (freeing a large value): meanwhile `update` has returned, the tracker has confirmed far
/// past `near_max_lag`, and near hits still answer the old value.
#[test]
fn a_reply_overtaken_between_check_and_insert_is_never_served() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let lag = Duration::from_millis(100);
    let server = RedisServer::start();
    let cache = rt.block_on(near_cache(&server.url(), "attack-keep", lag));
    let policy = Policy::new("probe", Duration::from_secs(60))
        .unwrap()
        .with_near(Duration::from_secs(30))
        .unwrap();
    let key = Key::raw("probe");

    // Stored in Redis (a miss does not keep); its write-back's messages applied.
    rt.block_on(async {
        let v1 = cache
            .fetch_near(&key, &policy, async { Ok::<_, String>(Probe::new(1)) })
            .await;
        assert_eq!(v1.map(|p| p.version), Ok(1));
        applied(&cache).await;
    });

    // R1 reads version 1 from Redis on a thread of its own, and is held on the allocation
    // of its copy: after the ticket check, before the insert.
    PARK_ON_SIZE.store(arc_probe_size(), Ordering::SeqCst);
    let r1 = std::thread::spawn({
        let (cache, policy, key) = (cache.clone(), policy, key.clone());
        move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            HOOKED_THREAD.with(|h| h.set(true));
            let got = rt.block_on(cache.fetch_near(&key, &policy, async {
                Err::<Probe, String>("R1 must hit".into())
            }));
            HOOKED_THREAD.with(|h| h.set(false));
            got.map(|p| p.version)
        }
    });
    let parked = rt.block_on(eventually(Duration::from_secs(10), || async {
        ALLOC_PARKED.load(Ordering::SeqCst)
    }));
    assert!(parked, "R1 parked between its ticket check and its insert");

    rt.block_on(async {
        // This process's own write: returns after dropping the copy (there is none yet).
        let changed = cache
            .update(&key, |p: &mut Probe| p.version = 2)
            .await
            .unwrap();
        assert!(changed);
        applied(&cache).await; // the update's own message too
        // R2 reads version 2 and keeps it.
        assert!(
            eventually(Duration::from_secs(5), || async {
                let before = cache.stats().near_hits;
                let got = cache
                    .fetch_near(&key, &policy, async { Err::<Probe, String>("no".into()) })
                    .await;
                assert_eq!(got.map(|p| p.version), Ok(2));
                cache.stats().near_hits > before
            })
            .await,
            "version 2 is kept near"
        );
    });

    // R1 goes on: its insert replaces version 2's copy, whose drop holds it before its
    // second check.
    DROP_PARK_VERSION.store(2, Ordering::SeqCst);
    ALLOC_RELEASE.store(true, Ordering::SeqCst);
    let parked = rt.block_on(eventually(Duration::from_secs(10), || async {
        DROP_PARKED.load(Ordering::SeqCst)
    }));

    // What a reader sees now, well past the update's return and the allowed lag, with the
    // tracker confirming.
    let (served, near_hit) = rt.block_on(async {
        tokio::time::sleep(lag * 3).await; // the time measured, not a synchronisation
        applied(&cache).await;
        let before = cache.stats().near_hits;
        let got = cache
            .fetch_near(&key, &policy, async { Err::<Probe, String>("no".into()) })
            .await;
        (got.map(|p| p.version), cache.stats().near_hits > before)
    });
    DROP_RELEASE.store(true, Ordering::SeqCst);
    let r1 = r1.join().unwrap();
    assert!(parked, "R1 parked inside its insert");
    assert_eq!(r1, Ok(1), "R1 asked first: version 1 is its answer");
    assert_eq!(
        served,
        Ok(2),
        "a read {:?} after `update` returned (and after its invalidation was applied) got \
         this version (near hit: {near_hit})",
        lag * 3
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A near-enabled read asks for PTTL too: an ACL user that may GET but not PTTL turns every
//    read into an uncached load.

static ACL_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "acl:<id>", ttl = "60s", near = "30s", cache = cache)]
async fn acl_row(cache: &Cache, id: u32) -> Result<u32, String> {
    ACL_LOADS.fetch_add(1, Ordering::SeqCst);
    Ok(id)
}

#[redis_cached(key = "acl:<id>", ttl = "60s", cache = cache)]
async fn acl_row_far(cache: &Cache, id: u32) -> Result<u32, String> {
    ACL_LOADS.fetch_add(1, Ordering::SeqCst);
    Ok(id)
}

/// Guarantee attacked: one load per cold key; `near` adds hits, never loads. The user here
/// may run everything the cache needs without `near` (and everything the tracker needs) but
/// not `PTTL`: the GET+PTTL pipeline fails with NOPERM, the read counts as Redis being
/// unavailable, the loader runs without a lease and nothing is ever stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_without_pttl_still_loads_once() {
    let server = RedisServer::start_with(&[
        "--user", "app", "on", ">pw", "~*", "&*", "+@all", "-pttl", "--user", "default", "off",
    ]);
    let url = format!("redis://app:pw@127.0.0.1:{}", server.port());

    // Without near, the same user: one load, then hits.
    let far = Cache::builder(&url)
        .namespace("attack-acl")
        .op_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(acl_row_far(&far, 1).await, Ok(1));
    }
    assert_eq!(
        ACL_LOADS.swap(0, Ordering::SeqCst),
        1,
        "without near: one load"
    );

    let cache = near_cache(&url, "attack-acl", Duration::from_millis(500)).await;
    for _ in 0..5 {
        assert_eq!(acl_row(&cache, 2).await, Ok(2));
    }
    let stats = cache.stats();
    assert_eq!(
        ACL_LOADS.load(Ordering::SeqCst),
        1,
        "with near: loads for 5 calls of one key (hits {}, fallbacks {})",
        stats.hits,
        stats.fallbacks
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Two functions sharing a key: one's `near` time is the other's.

#[redis_cached(key = "shared:<id>", ttl = "60s", near = "60s", cache = cache)]
async fn long_near(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

#[redis_cached(key = "shared:<id>", ttl = "60s", near = "50ms", cache = cache)]
async fn short_near(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// Guarantee attacked: "`near = "5s"` keeps a value at most 5 s". A copy kept by a function
/// with a longer `near` is served to one with a shorter one, for the longer time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_near_is_honoured_on_a_shared_key() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "attack-shared", Duration::from_secs(5)).await;
    let db = HeldDb::new(1);
    let _ = long_near(&cache, &db, 1).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            let before = cache.stats().near_hits;
            let _ = long_near(&cache, &db, 1).await;
            cache.stats().near_hits > before
        })
        .await
    );
    let kept = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await; // the age measured
    let before = cache.stats().near_hits;
    assert_eq!(short_near(&cache, &db, 1).await, Ok(1));
    assert_eq!(
        cache.stats().near_hits,
        before,
        "short_near (near = 50ms) answered from a copy kept {:?} ago",
        kept.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. WRONGTYPE in the GET+PTTL pipeline.

#[redis_cached(key = "row:<id>", ttl = "60s", cache = cache)]
async fn row_far(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// Guarantee attacked: one load per cold key (and "a key holding a non-string value is
/// replaced"). Without `near`, a key holding a hash gets WRONGTYPE on its GET, which the read
/// path recognises: the entry is replaced and read once. With `near`, the GET goes in a
/// pipeline with PTTL; its WRONGTYPE is not recognised, the read counts as Redis being
/// unavailable (a fallback), the loader runs without a lease and nothing replaces the key:
/// every call loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrongtype_key_is_replaced_with_near_on() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let hash = |cache: &Cache, id: u32| {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(cache.redis_key(&row_key(id))).arg("f").arg("v");
        cmd
    };

    // Without near: replaced once.
    let far = server.cache("attack-wrongtype").await;
    let _: () = hash(&far, 1).query_async(&mut conn).await.unwrap();
    let db = HeldDb::new(1);
    for _ in 0..5 {
        assert_eq!(row_far(&far, &db, 1).await, Ok(1));
    }
    assert_eq!(db.reads(), 1, "without near: one load");

    let cache = near_cache(&server.url(), "attack-wrongtype", Duration::from_secs(5)).await;
    let _: () = hash(&cache, 2).query_async(&mut conn).await.unwrap();
    let db = HeldDb::new(1);
    for _ in 0..5 {
        assert_eq!(row(&cache, &db, 2).await, Ok(1));
    }
    let stats = cache.stats();
    assert_eq!(
        db.reads(),
        1,
        "with near: loads for 5 calls of one key (fallbacks {}, decode_errors {})",
        stats.fallbacks,
        stats.decode_errors
    );
}

// ---------------------------------------------------------------------------------------------
// Attacks that held (kept as regression tests).

/// Dropping the cache ends the tracker: its connection leaves Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_cache_closes_the_tracking_connection() {
    let server = RedisServer::start();
    let conn = server.conn().await;
    let trackers = |list: String| {
        list.lines()
            .filter(|l| {
                l.split(' ')
                    .any(|f| f.starts_with("flags=") && f.contains('t'))
            })
            .count()
    };
    for round in 0..3 {
        let cache = near_cache(&server.url(), "attack-drop", Duration::from_millis(50)).await;
        let db = HeldDb::new(1);
        let _ = row(&cache, &db, round).await;
        drop(cache);
        let gone = eventually(Duration::from_secs(5), || {
            let mut conn = conn.clone();
            async move {
                let list: String = redis::cmd("CLIENT")
                    .arg("LIST")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                trackers(list) == 0
            }
        })
        .await;
        assert!(
            gone,
            "round {round}: a tracking connection outlived its cache"
        );
    }
}

/// A copy of a key with no expiry (written by hand, PTTL -1) is never kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_expiry_is_never_kept() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "attack-persist", Duration::from_secs(5)).await;
    let db = HeldDb::new(1);
    assert_eq!(row(&cache, &db, 1).await, Ok(1));
    // The miss's write-back (SET PX) lands first: PERSIST must come after it.
    cache.settle().await;
    let mut conn = server.conn().await;
    let _: () = redis::cmd("PERSIST")
        .arg(cache.redis_key(&row_key(1)))
        .query_async(&mut conn)
        .await
        .unwrap();
    applied(&cache).await;
    for _ in 0..20 {
        assert_eq!(row(&cache, &db, 1).await, Ok(1));
    }
    assert_eq!(cache.stats().near_hits, 0);
}

/// A restart with an empty dataset: the tracker's loss flushes the copies, and the next
/// reads load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_an_empty_dataset_leaves_no_copy() {
    let mut server = RedisServer::start();
    let cache = near_cache(&server.url(), "attack-restart", Duration::from_millis(200)).await;
    let db = HeldDb::new(1);
    warm(&cache, &db, 1).await;
    let flushes = cache.stats().near_flushes;
    server.restart();
    db.set_version(2);
    assert!(
        eventually(Duration::from_secs(5), || async {
            cache.stats().near_flushes > flushes
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            row(&cache, &db, 1).await == Ok(2)
        })
        .await
    );
    assert!(eventually(Duration::from_secs(10), || async { cache.near_is_live() }).await);
    warm(&cache, &db, 1).await;
}

static NOCLIENT_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "noclient:<id>", ttl = "60s", near = "30s", cache = cache)]
async fn noclient_row(cache: &Cache, id: u32) -> Result<u32, String> {
    NOCLIENT_LOADS.fetch_add(1, Ordering::SeqCst);
    Ok(id)
}

/// `CLIENT TRACKING` refused (an ACL user without `client`): no copy is ever served, and
/// the Redis path works as without `near`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_without_client_serves_no_copy_and_loads_once() {
    let server = RedisServer::start_with(&[
        "--user", "app", "on", ">pw", "~*", "&*", "+@all", "-client", "--user", "default", "off",
    ]);
    let url = format!("redis://app:pw@127.0.0.1:{}", server.port());
    let cache = Cache::builder(&url)
        .namespace("attack-noclient")
        .near_cache(100)
        .build()
        .await
        .unwrap();
    for _ in 0..20 {
        assert_eq!(noclient_row(&cache, 1).await, Ok(1));
    }
    assert!(!cache.near_is_live());
    assert_eq!(cache.stats().near_hits, 0);
    assert_eq!(NOCLIENT_LOADS.load(Ordering::SeqCst), 1);
}

#[redis_cached(key = "typed:<id>", ttl = "60s", near = "30s", cache = cache)]
async fn typed_wide(cache: &Cache, id: u32) -> Result<u64, String> {
    let _ = id;
    Ok(5)
}

#[redis_cached(key = "typed:<id>", ttl = "60s", near = "30s", cache = cache)]
async fn typed_narrow(cache: &Cache, id: u32) -> Result<u32, String> {
    let _ = id;
    Err("must not load".into())
}

/// Two functions sharing a key with different value types: each near hit is of its own
/// type, and a copy of the other type is a miss, not a wrong answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_value_types_on_one_key_never_cross() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "attack-typed", Duration::from_secs(5)).await;
    assert_eq!(typed_wide(&cache, 1).await, Ok(5));
    for _ in 0..50 {
        assert_eq!(typed_wide(&cache, 1).await, Ok(5));
        assert_eq!(typed_narrow(&cache, 1).await, Ok(5));
    }
}
