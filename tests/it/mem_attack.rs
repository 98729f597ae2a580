//! The in-memory cache attacked (`Cache::in_memory`, `mem://`): the engine's guarantees that
//! should hold without Redis. The tests not named `held_*` each failed before their fix (each
//! says what it expects and why); the `held_*` ones are attacks that held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use cached_redis::{Cache, Key, KeyFamily, Policy, redis_cached};
use cached_redis_tests::{HeldDb, eventually};
use serde::{Deserialize, Serialize, Serializer};
use tokio::sync::Notify;

fn policy() -> Policy {
    Policy::new("row", Duration::from_secs(60)).expect("a valid policy")
}

// ---------------------------------------------------------------------------------------
// A value whose encoding can be held: the leader is stopped after its load returned (and
// after `Leader::close`), before `Memory::store`. The one user hook in that window is the
// value's `Serialize` (the `None` probe and the encoding both call it).

/// Holds the first serialization after it is armed, until released.
#[derive(Debug)]
struct Gate {
    armed: std::sync::atomic::AtomicBool,
    entered: Notify,
    release_tx: Mutex<mpsc::Sender<()>>,
    release_rx: Mutex<mpsc::Receiver<()>>,
}

impl Gate {
    fn armed() -> Arc<Gate> {
        let (tx, rx) = mpsc::channel();
        Arc::new(Gate {
            armed: true.into(),
            entered: Notify::new(),
            release_tx: Mutex::new(tx),
            release_rx: Mutex::new(rx),
        })
    }

    fn release(&self) {
        let _ = self.release_tx.lock().unwrap().send(());
    }
}

/// A version read from the "database", carrying the gate that holds its encoding.
#[derive(Debug, Clone, Deserialize)]
struct Gated {
    version: u64,
    #[serde(skip)]
    gate: Option<Arc<Gate>>,
}

impl PartialEq for Gated {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
    }
}

impl Serialize for Gated {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let Some(gate) = &self.gate
            && gate.armed.swap(false, Ordering::SeqCst)
        {
            gate.entered.notify_one();
            let _ = gate.release_rx.lock().unwrap().recv();
        }
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Gated", 1)?;
        s.serialize_field("version", &self.version)?;
        s.end()
    }
}

/// A cold read of `key` whose loader reads `db` and whose value's encoding `gate` holds, on a
/// thread of its own (the held encoding blocks that thread).
fn gated_read(
    cache: &Cache,
    key: &Key,
    db: &Arc<AtomicU64>,
    gate: &Arc<Gate>,
) -> std::thread::JoinHandle<Result<Gated, String>> {
    let (cache, key, db, gate) = (cache.clone(), key.clone(), db.clone(), gate.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let loader = async move {
                Ok(Gated {
                    version: db.load(Ordering::SeqCst),
                    gate: Some(gate),
                })
            };
            cache.fetch(&key, &policy(), loader).await
        })
    })
}

/// A read of `key` whose loader (if it runs) reads `db`.
async fn plain_read(cache: &Cache, key: &Key, db: &Arc<AtomicU64>) -> u64 {
    let db = db.clone();
    let got: Result<Gated, String> = cache
        .fetch(key, &policy(), async move {
            Ok(Gated {
                version: db.load(Ordering::SeqCst),
                gate: None,
            })
        })
        .await;
    got.unwrap().version
}

/// The race: a load reads version 1 and returns; while its value is being encoded (its flight
/// already closed, its store not yet made) the row is written (version 2) and `invalidate`
/// runs and returns. A read that starts afterwards must see version 2.
async fn race_with_a_store<F, Fut>(invalidate: F) -> (u64, u64)
where
    F: FnOnce(Cache) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let cache = Cache::in_memory(100);
    let key = Key::builder().text("row:").part(&1u32).build();
    let db = Arc::new(AtomicU64::new(1));
    let gate = Gate::armed();
    let entered = gate.entered.notified();
    let leader = gated_read(&cache, &key, &db, &gate);
    entered.await; // the load returned version 1; its value is being encoded
    db.store(2, Ordering::SeqCst); // the write
    invalidate(cache.clone()).await; // ... and its invalidation, which returns
    gate.release();
    let own = leader.join().unwrap().unwrap().version;
    let after = plain_read(&cache, &key, &db).await;
    (own, after)
}

/// `invalidate_prefix` is documented race-free ("After either returns `Ok`, no read of a
/// matching entry returns a value loaded before the call began"), and on Redis the lease
/// closes the window. In memory, the leader leaves the flight map (`Leader::close`) before
/// `Memory::store`: a prefix invalidation in between neither sees the key in flight nor finds
/// an entry to remove, bumps no stripe, and the load's store then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_prefix_refuses_a_load_between_its_flight_and_its_store() {
    let (own, after) = race_with_a_store(|cache| async move {
        let removed = cache.invalidate_prefix("row:").await.unwrap();
        assert_eq!(removed, 0, "nothing was stored yet");
    })
    .await;
    assert_eq!(own, 1, "the racing load's own caller gets what it read");
    assert_eq!(
        after, 2,
        "a read after invalidate_prefix returned got the value loaded before it"
    );
}

/// The same window, through `invalidate_all_<fn>` (`Cache::invalidate_family`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_family_refuses_a_load_between_its_flight_and_its_store() {
    let (_, after) = race_with_a_store(|cache| async move {
        let rows = KeyFamily::builder().text("row:").part().build();
        cache.invalidate_family(&rows).await.unwrap();
    })
    .await;
    assert_eq!(
        after, 2,
        "a read after invalidate_family returned got the value loaded before it"
    );
}

/// Control: the same window with a single-key `invalidate` is refused (the stripe is bumped
/// whatever is in flight), and `clear` too (the epoch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_invalidate_and_clear_refuse_a_load_between_its_flight_and_its_store() {
    let (_, after) = race_with_a_store(|cache| async move {
        let key = Key::builder().text("row:").part(&1u32).build();
        cache.invalidate(&key).await.unwrap();
    })
    .await;
    assert_eq!(after, 2);
    let (_, after) = race_with_a_store(|cache| async move {
        cache.clear().await.unwrap();
    })
    .await;
    assert_eq!(after, 2);
    let (_, after) = race_with_a_store(|cache| async move {
        let key = Key::builder().text("row:").part(&1u32).build();
        let changed = cache.update(&key, |g: &mut Gated| g.version = 2).await;
        assert!(!changed.unwrap(), "nothing stored yet");
    })
    .await;
    assert_eq!(after, 2);
}

/// "one load per key (callers join it)": on Redis, a caller arriving while the leader
/// writes its value back finds the lease and waits for the write-back. In memory the leader
/// has left the flight map before it encodes and stores (`Leader::close` comes first), so a
/// caller arriving then finds neither an entry nor a flight, and loads again: every caller
/// that arrives while a value is being encoded (a large value takes milliseconds) costs one
/// more load of a key whose data did not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_arriving_during_the_store_joins_the_load() {
    let cache = Cache::in_memory(100);
    let key = Key::builder().text("row:").part(&1u32).build();
    let db = Arc::new(AtomicU64::new(1));
    let gate = Gate::armed();
    let entered = gate.entered.notified();
    let leader = gated_read(&cache, &key, &db, &gate);
    entered.await; // the load returned; its value is being encoded
    let loads = Arc::new(AtomicU64::new(0));
    let second = tokio::spawn({
        let (cache, key, loads) = (cache.clone(), key.clone(), loads.clone());
        async move {
            let got: Result<Gated, String> = cache
                .fetch(&key, &policy(), async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    Ok(Gated {
                        version: 1,
                        gate: None,
                    })
                })
                .await;
            got
        }
    });
    // The second caller either joined or loaded: then let the first store.
    assert!(
        eventually(Duration::from_secs(2), || async {
            let s = cache.stats();
            s.coalesced + s.loads >= 2
        })
        .await
    );
    gate.release();
    leader.join().unwrap().unwrap();
    assert_eq!(second.await.unwrap().unwrap().version, 1);
    assert_eq!(
        (cache.stats().loads, loads.load(Ordering::SeqCst)),
        (1, 0),
        "loads of one cold key whose data never changed"
    );
}

// ---------------------------------------------------------------------------------------

/// Keys longer than `MAX_KEY_LEN` are stored as a readable start, `\#` and a hash. The guide
/// (guarantee 8) says a prefix longer than that readable start still matches such a key; on
/// Redis `prefix_patterns` adds a pattern for it. In memory `invalidate_prefix` only tests
/// `starts_with(prefix)`, which the shortened key never does: the entry is not removed, and
/// the next read serves the value from before the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_prefix_reaches_long_keys() {
    let cache = Cache::in_memory(100);
    let long = "x".repeat(300);
    let key = Key::builder().text("doc:").part(long.as_str()).build();
    assert!(key.as_str().contains(r"\#"), "the key is shortened");
    let db = Arc::new(AtomicU64::new(1));
    assert_eq!(plain_read(&cache, &key, &db).await, 1);
    db.store(2, Ordering::SeqCst);
    let prefix = format!("doc:{}", &long[..200]);
    let removed = cache.invalidate_prefix(&prefix).await.unwrap();
    assert_eq!(
        plain_read(&cache, &key, &db).await,
        2,
        "read after invalidate_prefix({prefix:.12}...) removed {removed} entries"
    );
}

// ---------------------------------------------------------------------------------------

#[redis_cached(key = "slow:<id>", ttl = "60s", max_load = "200ms", cache = cache)]
async fn slow(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// `max_load`: "A loader still running past it is not cancelled ... but the callers that
/// joined it read again ... so one hung query does not stall a key everywhere". The in-memory
/// read path (`lead_in_memory`) has no `max_load` at all: a hung load holds its joiners for
/// as long as it hangs, and `Cache::builder("mem://").max_load(..)` or the attribute's
/// `max_load` are silently ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_load_releases_the_joiners_of_a_hung_load() {
    let cache = Cache::builder("mem://")
        .max_load(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let db = Arc::new(HeldDb::new(1));
    let started = db.hold_next_read();
    let hung = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { slow(&cache, &db, 1).await }
    });
    started.await; // the load hangs from here until released
    let joiner = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { slow(&cache, &db, 1).await }
    });
    assert!(
        eventually(Duration::from_secs(2), || async {
            cache.stats().coalesced == 1
        })
        .await,
        "the second caller joined the load"
    );
    // Ten times max_load: the joiner should have loaded for itself long before.
    let answered = tokio::time::timeout(Duration::from_secs(2), joiner).await;
    db.release();
    let _ = hung.await;
    assert!(
        answered.is_ok(),
        "the joiner of a load hung past max_load (200 ms) was still waiting after 2 s"
    );
}

// ---------------------------------------------------------------------------------------

/// Invalidates 20,000 keys other than `of`, none of them cached: before the in-memory
/// cache kept a version per key, one of them shared `of`'s stripe (of 16,384) and its
/// invalidation made `of`'s entry unservable, or refused its load.
async fn invalidate_others(cache: &Cache) {
    for n in 0u32..20_000 {
        let other = Key::builder().text("other:").part(&n).build();
        assert!(!cache.invalidate(&other).await.unwrap());
    }
}

/// "at most `entries` entries (the least used go first)": an entry goes because it is least
/// used, or with an invalidation of its own key. Here a hot entry with room to spare stops
/// being served because an unrelated key (never cached) was invalidated: every
/// `invalidate_*`/`update_*` of a key drops every entry of its stripe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_an_unrelated_key_drops_no_entry() {
    let hot = Key::raw("hot");
    let cache = Cache::in_memory(1_000);
    let db = Arc::new(AtomicU64::new(1));
    plain_read(&cache, &hot, &db).await;
    invalidate_others(&cache).await;
    assert!(
        cache.ttl(&hot).await.unwrap().is_some(),
        "`hot` stopped being served after invalidations of other keys"
    );
}

/// At scale: `invalidate_prefix("gone:")` over 8,000 entries leaves a third of another
/// template's 500 entries unservable (8,000 bumped stripes of 16,384), with the cache at a
/// fraction of its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_invalidation_drops_nothing_outside_the_prefix() {
    let cache = Cache::in_memory(20_000);
    let db = Arc::new(AtomicU64::new(1));
    for n in 0u32..500 {
        plain_read(&cache, &Key::builder().text("keep:").part(&n).build(), &db).await;
    }
    for n in 0u32..8_000 {
        plain_read(&cache, &Key::builder().text("gone:").part(&n).build(), &db).await;
    }
    assert_eq!(cache.invalidate_prefix("gone:").await.unwrap(), 8_000);
    let mut kept = 0;
    for n in 0u32..500 {
        let key = Key::builder().text("keep:").part(&n).build();
        kept += u32::from(cache.ttl(&key).await.unwrap().is_some());
    }
    assert_eq!(kept, 500, "only {kept} of 500 `keep:` entries still served");
}

/// "one load per key (callers join it)": a cold key's load (with a caller joined) is refused
/// because an unrelated key sharing its stripe was invalidated meanwhile; its joiner reads
/// again and loads a second time, though the key's data never changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrelated_invalidation_refuses_no_load() {
    #[redis_cached(key = "hot", ttl = "60s", cache = cache)]
    async fn hot(cache: &Cache, db: &HeldDb) -> Result<u64, String> {
        db.read().await
    }
    let cache = Cache::in_memory(1_000);
    let db = Arc::new(HeldDb::new(1));
    let started = db.hold_next_read();
    let first = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { hot(&cache, &db).await }
    });
    started.await;
    let second = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { hot(&cache, &db).await }
    });
    assert!(
        eventually(Duration::from_secs(2), || async {
            cache.stats().coalesced == 1
        })
        .await
    );
    invalidate_others(&cache).await;
    db.release();
    assert_eq!(first.await.unwrap(), Ok(1));
    assert_eq!(second.await.unwrap(), Ok(1));
    let stats = cache.stats();
    assert_eq!(
        (db.reads(), stats.loads, stats.stale_refused),
        (1, 1, 0),
        "loads of `hot` after invalidations of other keys"
    );
}

// ---------------------------------------------------------------------------------------

/// `Stats::decode_errors`: "Stored values that did not decode and were treated as a miss",
/// and the guide's "Undecodable values are misses: logged, reloaded and overwritten". In
/// memory a stored value that does not decode as the caller's type (two functions sharing a
/// key, a type that changed shape) is a plain miss: not counted, not logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_entries_are_counted() {
    let cache = Cache::in_memory(100);
    let key = Key::raw("shared");
    let number: Result<u64, String> = cache.fetch(&key, &policy(), async { Ok(7) }).await;
    assert_eq!(number, Ok(7));
    let text: Result<String, String> = cache
        .fetch(&key, &policy(), async { Ok("seven".to_owned()) })
        .await;
    assert_eq!(text.as_deref(), Ok("seven"), "reloaded");
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.loads), (2, 2));
    assert_eq!(stats.decode_errors, 1, "{stats:?}");
}

// ---------------------------------------------------------------------------------------
// What held.

#[redis_cached(key = "row:<id>", ttl = "60s", cache = cache)]
async fn row(cache: &Cache, db: &HeldDb, id: u32) -> Result<u64, String> {
    let _ = id;
    db.read().await
}

/// A leader dropped mid-load leaves its joiners unstuck, nothing in flight, and the entry
/// right. (How many loads follow is not asserted: the joiners of a cancelled load start over,
/// and under CPU contention they need not all join the next one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_cancelled_leader_leaves_nobody_hanging() {
    let cache = Cache::in_memory(100);
    let db = Arc::new(HeldDb::new(1));
    let started = db.hold_next_read();
    let leader = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { row(&cache, &db, 1).await }
    });
    started.await;
    let joiners: Vec<_> = (0..5)
        .map(|_| {
            let (cache, db) = (cache.clone(), db.clone());
            tokio::spawn(async move { row(&cache, &db, 1).await })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(2), || async {
            cache.stats().coalesced == 5
        })
        .await
    );
    db.set_version(2); // the joiners' new load may start as soon as the leader goes
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    for joiner in joiners {
        let got = tokio::time::timeout(Duration::from_secs(2), joiner).await;
        assert_eq!(got.unwrap().unwrap(), Ok(2));
    }
    assert_eq!(cached_redis::__private::in_flight(&cache).0, 0);
    db.set_version(3);
    assert_eq!(
        row(&cache, &db, 1).await,
        Ok(2),
        "the new load's value is cached"
    );
}

/// `refresh_<fn>` with a stale load in flight: the stale load is refused, the refresh
/// answers the new version, and the entry holds it. `cache_if` values are not stored.
/// `with_cache` hands an in-memory cache to functions without `cache =`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_refresh_cache_if_and_with_cache() {
    let cache = Cache::in_memory(100);
    let db = Arc::new(HeldDb::new(1));
    let started = db.hold_next_read();
    let stale = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { row(&cache, &db, 1).await }
    });
    started.await;
    db.set_version(2);
    let refreshed = tokio::spawn({
        let (cache, db) = (cache.clone(), db.clone());
        async move { refresh_row(&cache, &db, 1).await }
    });
    assert!(
        eventually(Duration::from_secs(2), || async {
            cache.stats().coalesced == 1
        })
        .await,
        "the refresh joined the stale load"
    );
    db.release();
    assert_eq!(stale.await.unwrap(), Ok(1));
    assert_eq!(refreshed.await.unwrap().unwrap(), Ok(2));
    db.set_version(3);
    assert_eq!(row(&cache, &db, 1).await, Ok(2));

    #[redis_cached(key = "evens:<n>", ttl = "60s", cache = cache, cache_if = |v: &u32| v.is_multiple_of(2))]
    async fn evens(cache: &Cache, n: u32, loads: &AtomicU64) -> Result<u32, String> {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok(n)
    }
    let loads = AtomicU64::new(0);
    for _ in 0..2 {
        assert_eq!(evens(&cache, 1, &loads).await, Ok(1));
        assert_eq!(evens(&cache, 2, &loads).await, Ok(2));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 3, "1 loaded twice, 2 once");

    #[redis_cached(key = "g", ttl = "60s")]
    async fn global_fn(loads: &AtomicU64) -> Result<u64, String> {
        Ok(loads.fetch_add(1, Ordering::SeqCst))
    }
    let loads = AtomicU64::new(0);
    let own = Cache::in_memory(10);
    let (a, b) = cached_redis::with_cache(own.clone(), async {
        (global_fn(&loads).await, global_fn(&loads).await)
    })
    .await;
    assert_eq!((a, b), (Ok(0), Ok(0)));
    assert_eq!(own.stats().hits, 1);
}

/// Concurrent updates in one process: none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_concurrent_updates_lose_nothing() {
    let cache = Cache::in_memory(100);
    let key = Key::raw("counter");
    let first: Result<Vec<u32>, String> = cache.fetch(&key, &policy(), async { Ok(vec![]) }).await;
    assert_eq!(first, Ok(vec![]));
    let tasks: Vec<_> = (0..16u32)
        .map(|n| {
            let (cache, key) = (cache.clone(), key.clone());
            tokio::spawn(async move {
                cache
                    .update(&key, |v: &mut Vec<u32>| {
                        std::thread::sleep(Duration::from_millis(2));
                        v.push(n);
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        applied += u32::from(task.await.unwrap());
    }
    let now: Result<Vec<u32>, String> = cache.fetch(&key, &policy(), async { Ok(vec![99]) }).await;
    let now = now.unwrap();
    // Either every update is in the entry, or the entry went (reloaded).
    assert!(
        now == vec![99] || now.len() as u32 == applied,
        "{applied} applied, entry {now:?}"
    );
}

/// `None` without `none_ttl` is never stored; a `none_ttl` far past any `Instant` does not
/// panic; `near` on an in-memory cache changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_none_ttl_huge_ttls_and_near() {
    let cache = Cache::in_memory(100);
    let plain = Policy::new("opt", Duration::from_secs(60)).unwrap();
    let key = Key::raw("opt");
    let none: Option<u32> = cache.fetch(&key, &plain, async { None }).await;
    assert_eq!(none, None);
    assert_eq!(cache.ttl(&key).await.unwrap(), None);
    let forever = plain.with_none_ttl(Duration::MAX).unwrap();
    let none: Option<u32> = cache.fetch(&key, &forever, async { None }).await;
    assert_eq!(none, None);
    assert!(cache.ttl(&key).await.unwrap().is_some());
    let near = Policy::new("near", Duration::from_millis(300))
        .unwrap()
        .with_near(Duration::from_secs(60))
        .unwrap();
    let k = Key::raw("near");
    let a: Result<u32, String> = cache.fetch_near(&k, &near, async { Ok(1) }).await;
    let b: Result<u32, String> = cache.fetch_near(&k, &near, async { Ok(2) }).await;
    assert_eq!((a, b), (Ok(1), Ok(1)));
    assert!(cache.ttl(&k).await.unwrap().unwrap() <= Duration::from_millis(300));
    assert_eq!(cache.stats().near_hits, 0);
}

/// The bound on entries is exact for small and odd sizes; 0 and `usize::MAX` build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_the_bound_on_entries() {
    for bound in [0usize, usize::MAX] {
        let cache = Cache::in_memory(bound);
        let db = Arc::new(AtomicU64::new(1));
        assert_eq!(plain_read(&cache, &Key::raw("k"), &db).await, 1);
        assert!(cache.ttl(&Key::raw("k")).await.unwrap().is_some());
    }
    for bound in [1usize, 7, 10, 33, 100, 1_000] {
        let cache = Cache::in_memory(bound);
        let db = Arc::new(AtomicU64::new(1));
        let keys: Vec<Key> = (0..bound as u32 * 5)
            .map(|n| Key::builder().text("b:").part(&n).build())
            .collect();
        for key in &keys {
            plain_read(&cache, key, &db).await;
        }
        let mut kept = 0;
        for key in &keys {
            kept += usize::from(cache.ttl(key).await.unwrap().is_some());
        }
        assert!(kept <= bound, "{kept} kept with room for {bound}");
    }
}

/// "the least used go first": a key read often survives a stream of keys read once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_a_hot_entry_survives_a_scan() {
    let cache = Cache::in_memory(100);
    let db = Arc::new(AtomicU64::new(1));
    let hot = Key::raw("hot");
    for n in 0u32..5_000 {
        if n % 10 == 0 {
            plain_read(&cache, &hot, &db).await;
        }
        plain_read(&cache, &Key::builder().text("once:").part(&n).build(), &db).await;
    }
    assert!(cache.ttl(&hot).await.unwrap().is_some());
    let s = cache.stats();
    assert!(s.misses <= 5_001, "{s:?}");
}
