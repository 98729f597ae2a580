//! Second round of adversarial tests of lease-first reads (`read/first_read.rs`, their uses in
//! `read/fetch.rs`, `read/lead.rs`, `read/flight.rs`, `read/wait.rs`).
//!
//! `found_*` tests failed on the code they were written against (febd243), for the reason in
//! their comment, and pass since their fix; `held_*` tests are attacks the code withstood. A function is put in
//! lease-first mode by 40 misses of distinct rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use cached_redis::{Cache, Key};
use cached_redis_tests::{Gate, RedisServer, eventually, get_raw};

/// Bounds every test: a hang fails instead of blocking the run.
const BOUND: Duration = Duration::from_secs(90);

use cached_redis_tests::rows::{call, lease_first, policy};

/// Reads row `id` of `name`, its load counted in `loads` and held at `gate`.
fn gated_call(
    cache: &Cache,
    name: &'static str,
    id: u32,
    loads: &Arc<AtomicU32>,
    gate: &Gate,
) -> tokio::task::JoinHandle<Result<u32, String>> {
    let (cache, loads, gate) = (cache.clone(), loads.clone(), gate.clone());
    tokio::spawn(async move {
        let key = Key::raw(format!("{name}:{id}"));
        let load = async {
            loads.fetch_add(1, SeqCst);
            gate.passed().await;
            Ok(id)
        };
        cache.fetch(&key, &policy(name), load).await
    })
}

/// `calls` spawned calls of row `id`, their loads counted in `loads`.
fn spawn_calls(
    cache: &Cache,
    name: &'static str,
    id: u32,
    calls: usize,
    loads: &Arc<AtomicU32>,
) -> Vec<tokio::task::JoinHandle<Result<u32, String>>> {
    (0..calls)
        .map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move { call(&cache, name, id, &loads).await })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Bugs
// ---------------------------------------------------------------------------------------------

/// Bug (read/lead.rs `lead`, read/flight.rs `Shared::found`, read/fetch.rs
/// `count_unread_joiner`): a lease-first leader that found the lease held by another process
/// waits, and then reads the value that process stored: `Lease::Waited`, which
/// `first_read_answered` rightly counts as a *miss* (outcome `waited`). But `lead` hands it to
/// the joiners as `Shared::found(..)`, i.e. `found: true`, so every caller that joined it is
/// counted as a *hit* (outcome `hit`) and lowers the function's score by 9. The same five
/// calls in GET-first mode count five misses and no hit (each GET found nothing; the joiners'
/// outcome is `waited`). A cross-process stampede on a cold key thus reports a hit ratio of
/// 80% on the waiting process, and its joiners' hits throw the function out of lease-first.
///
/// Fails with: `5 calls of a cold key another process was loading: hits 4, misses 1
/// (GET-first: hits 0, misses 5)`.
// Failed on febd243 (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_joiners_of_a_lease_first_call_that_waited_for_another_process_count_as_hits() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let holder = server.cache("w").await;
        let control = server.cache("w").await;
        let reader = server.cache("w").await;
        lease_first(&reader, "w", 0).await;

        let (hits, misses, coalesced) =
            five_calls_while_another_process_loads(&server, &holder, &control, 500).await;
        assert_eq!((hits, misses, coalesced), (0, 5, 4), "control, GET-first");

        let (hits, misses, coalesced) =
            five_calls_while_another_process_loads(&server, &holder, &reader, 600).await;
        assert_eq!(coalesced, 4);
        assert_eq!(
            (hits, misses),
            (0, 5),
            "5 calls of a cold key another process was loading: hits {hits}, misses {misses} \
             (GET-first: hits 0, misses 5)"
        );
    })
    .await
    .expect("bounded");
}

/// `holder` takes row `id`'s lease and holds its load at a gate; meanwhile five calls of the
/// row on `reader` begin: one waits for the lease, four join it. Returns the hits, misses and
/// coalesced callers `reader` counted for them.
async fn five_calls_while_another_process_loads(
    server: &RedisServer,
    holder: &Cache,
    reader: &Cache,
    id: u32,
) -> (u64, u64, u64) {
    let (gate, loads) = (Gate::new(), Arc::new(AtomicU32::new(0)));
    let held = gated_call(holder, "w", id, &loads, &gate);
    let lease = format!("w:{{w:{id}}}:lease");
    let mut admin = server.conn().await;
    let leased = || {
        let (mut admin, lease) = (admin.clone(), lease.clone());
        async move { get_raw(&mut admin, &lease).await.is_some() }
    };
    assert!(eventually(Duration::from_secs(10), leased).await, "leased");
    let before = reader.stats();
    let calls = spawn_calls(reader, "w", id, 5, &loads);
    let waiting = || async {
        let now = reader.stats();
        now.lock_waits == before.lock_waits + 1 && now.coalesced == before.coalesced + 4
    };
    assert!(
        eventually(Duration::from_secs(10), waiting).await,
        "one waits, four join: {:?}",
        reader.stats()
    );
    gate.open();
    assert_eq!(held.await.unwrap(), Ok(id));
    for call in calls {
        assert_eq!(call.await.unwrap(), Ok(id));
    }
    assert_eq!(loads.load(SeqCst), 1, "one load across processes");
    let _ = &mut admin;
    let stats = reader.stats();
    (
        stats.hits - before.hits,
        stats.misses - before.misses,
        stats.coalesced - before.coalesced,
    )
}

/// Bug (read/fetch.rs `count_unread_joiner` counting `Shared::Value { found: false }` as a
/// miss; read/lead.rs `first_read_answered` resetting the score only once): against a
/// black-holed Redis, 40 concurrent lease-first calls of a row that *is* cached join the
/// leader's script; it times out, the leader counts a fallback, resets the score and loads
/// without Redis, and its 39 joiners, who never had an answer from Redis, are each counted as
/// a *miss* ("calls that found no usable value in Redis") and raise the score again, to 39:
/// the function is back in lease-first mode while Redis is still down, though "either way
/// the function's score is reset". The same 40 calls in GET-first mode count 40 fallbacks and
/// no miss.
///
/// Fails with: `40 lease-first calls of a cached row against a black-holed Redis: misses 39,
/// fallbacks 1 (GET-first: misses 0, fallbacks 40)`.
// Failed on febd243 (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_joiners_of_a_lease_first_fallback_count_as_misses_and_raise_the_score_again() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let build = || {
            server
                .cache_builder("o")
                .op_timeout(Duration::from_secs(3))
                .breaker_threshold(1000)
                .build()
        };
        let (first, control) = (build().await.unwrap(), build().await.unwrap());
        lease_first(&first, "o", 0).await;
        let loads = AtomicU32::new(0);
        assert_eq!(
            call(&control, "o", 5, &loads).await,
            Ok(5),
            "a GET-first hit"
        );
        assert_eq!(loads.load(SeqCst), 0);

        server.pause();
        let burst = |cache: Cache, id: u32| async move {
            let before = cache.stats();
            let loads = Arc::new(AtomicU32::new(0));
            for call in spawn_calls(&cache, "o", id, 40, &loads) {
                assert_eq!(call.await.unwrap(), Ok(id), "the loader answers");
            }
            let now = cache.stats();
            (now.misses - before.misses, now.fallbacks - before.fallbacks)
        };
        let (control_misses, control_fallbacks) = burst(control.clone(), 6).await;
        let (misses, fallbacks) = burst(first.clone(), 7).await;
        server.resume();
        assert_eq!(
            (control_misses, control_fallbacks),
            (0, 40),
            "control, GET-first"
        );
        assert_eq!(
            (misses, fallbacks),
            (0, 40),
            "40 lease-first calls of a cached row against a black-holed Redis: misses \
             {misses}, fallbacks {fallbacks} (GET-first: misses {control_misses}, fallbacks \
             {control_fallbacks})"
        );
    })
    .await
    .expect("bounded");
}

/// Bug (read/fetch.rs `miss`: a lease-first call joins with `redis_ok = true` though it never
/// reached Redis; read/flight.rs `wait` then turns an unleased value loaded after it began
/// into `Reread`; made reachable during an outage by the joiners' misses of
/// `found_joiners_of_a_lease_first_fallback_count_as_misses_and_raise_the_score_again`, which
/// put the function back in lease-first after the leaders reset it). Redis black-holed: row
/// 1000's leader loads without Redis (its load held at a gate); a call of row 1000 that
/// begins then starts with the lease script (score 39), so it joins at once; the load's
/// unleased value is not handed to it, it reads again with a `GET` that waits `op_timeout`,
/// and then loads the row itself: two loads of one cold key in one process, and the call
/// waits for the other load, a whole `op_timeout` and its own load. In GET-first mode the
/// call's GET times out, it joins with `redis_ok = false` and takes the unleased value: one
/// load.
///
/// Fails with: `a cold row loaded 2 times in one process during an outage (GET-first: 1)`.
// Failed on febd243 (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_during_an_outage_a_lease_first_joiner_reads_again_and_loads_the_key_twice() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let build = |ns: &'static str| {
            server
                .cache_builder(ns)
                .op_timeout(Duration::from_secs(2))
                .breaker_threshold(1000)
                .build()
        };
        let (first, control) = (build("t").await.unwrap(), build("t-get").await.unwrap());
        lease_first(&first, "t", 0).await;
        let loads = AtomicU32::new(0);
        assert_eq!(call(&control, "t", 0, &loads).await, Ok(0));
        control.settle().await;

        server.pause();
        // Control, GET-first: row 3000's load held; a second call's GET times out, it joins
        // and takes the value.
        let (gate, loads) = (Gate::new(), Arc::new(AtomicU32::new(0)));
        let leader = gated_call(&control, "t", 3000, &loads, &gate);
        let loading = || async { loads.load(SeqCst) == 1 };
        assert!(eventually(Duration::from_secs(20), loading).await);
        let before = control.stats().coalesced;
        let joiner = spawn_calls(&control, "t", 3000, 1, &loads).remove(0);
        let joined = || async { control.stats().coalesced == before + 1 };
        assert!(eventually(Duration::from_secs(20), joined).await, "joined");
        gate.open();
        assert_eq!(leader.await.unwrap(), Ok(3000));
        assert_eq!(joiner.await.unwrap(), Ok(3000));
        let control_loads = loads.load(SeqCst);

        // Lease-first: row 1000's load held (Y), and 40 calls of row 2000 (X), one leading,
        // 39 joining, its load held too; both scripts time out and reset the score.
        let (gate_y, loads_y) = (Gate::new(), Arc::new(AtomicU32::new(0)));
        let (gate_x, loads_x) = (Gate::new(), Arc::new(AtomicU32::new(0)));
        let before = first.stats().coalesced;
        let y = gated_call(&first, "t", 1000, &loads_y, &gate_y);
        let xs: Vec<_> = (0..40)
            .map(|_| gated_call(&first, "t", 2000, &loads_x, &gate_x))
            .collect();
        let loading = || async {
            loads_y.load(SeqCst) == 1
                && loads_x.load(SeqCst) == 1
                && first.stats().coalesced == before + 39
        };
        assert!(
            eventually(Duration::from_secs(20), loading).await,
            "both load without Redis: {:?}",
            first.stats()
        );
        // X's joiners are answered (and counted as misses).
        gate_x.open();
        for x in xs {
            assert_eq!(x.await.unwrap(), Ok(2000));
        }
        // A call of row 1000 begins while Y's load runs, and joins it (at once, or after its
        // GET timed out).
        let before = first.stats().coalesced;
        let c = spawn_calls(&first, "t", 1000, 1, &loads_y).remove(0);
        let joined = || async { first.stats().coalesced == before + 1 };
        assert!(eventually(Duration::from_secs(20), joined).await, "joined");
        gate_y.open();
        assert_eq!(y.await.unwrap(), Ok(1000));
        assert_eq!(c.await.unwrap(), Ok(1000));
        server.resume();
        assert_eq!(control_loads, 1, "control, GET-first");
        let loaded = loads_y.load(SeqCst);
        assert_eq!(
            loaded,
            1,
            "a cold row loaded {loaded} times in one process during an outage (GET-first: \
             {control_loads}): {:?}",
            first.stats()
        );
    })
    .await
    .expect("bounded");
}

// ---------------------------------------------------------------------------------------------
// Attacks that held
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct DbError(String);

/// Row `id`: `Ok(id)`, or the error when `fail`; every load counted in `loads` and held at
/// `gate`.
#[cached_redis::redis_cached(
    key = "cl:<id>",
    ttl = "60s",
    cache = cache,
    skip = "fail, loads, gate"
)]
async fn cloned_row(
    cache: &Cache,
    id: u32,
    fail: bool,
    loads: Arc<AtomicU32>,
    gate: Gate,
) -> Result<u32, DbError> {
    loads.fetch_add(1, SeqCst);
    gate.passed().await;
    if fail {
        Err(DbError(format!("no row {id}")))
    } else {
        Ok(id)
    }
}

/// A lease-first function whose error is `Clone`: ten concurrent calls of a cold row whose
/// load fails share one load and each get its error; nothing is cached, no lease is left, and
/// the next call loads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_lease_first_joiners_share_a_cloned_error_and_it_is_not_cached() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let cache = server.cache("cl").await;
        let (open, loads) = (Gate::new(), Arc::new(AtomicU32::new(0)));
        open.open();
        for id in 0..40 {
            let row = cloned_row(&cache, id, false, loads.clone(), open.clone()).await;
            assert_eq!(row, Ok(id));
        }
        cache.settle().await;
        let (gate, loads) = (Gate::new(), Arc::new(AtomicU32::new(0)));
        let before = cache.stats();
        let calls: Vec<_> = (0..10)
            .map(|_| {
                let (cache, loads, gate) = (cache.clone(), loads.clone(), gate.clone());
                tokio::spawn(async move { cloned_row(&cache, 900, true, loads, gate).await })
            })
            .collect();
        let joined = || async { cache.stats().coalesced == before.coalesced + 9 };
        assert!(
            eventually(Duration::from_secs(10), joined).await,
            "{:?}",
            cache.stats()
        );
        gate.open();
        for call in calls {
            assert_eq!(call.await.unwrap(), Err(DbError("no row 900".into())));
        }
        assert_eq!(loads.load(SeqCst), 1, "one load shared");
        cache.settle().await;
        let mut admin = server.conn().await;
        assert_eq!(get_raw(&mut admin, "cl:{cl:900}").await, None, "not cached");
        assert_eq!(
            get_raw(&mut admin, "cl:{cl:900}:lease").await,
            None,
            "no lease"
        );
        assert_eq!(
            cloned_row(&cache, 900, false, loads.clone(), gate.clone()).await,
            Ok(900)
        );
        assert_eq!(loads.load(SeqCst), 2, "the error was not cached");
        cached_redis_tests::assert_no_state_left(&cache).await;
    })
    .await
    .expect("bounded");
}

/// A lease-first `Option` function with `none_ttl`: a cached `None` is a hit (no load) when
/// read through the lease script; an `update` of a cached row and an invalidation are seen by
/// the next lease-first call, in this process and in another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_lease_first_none_ttl_update_and_invalidate() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let cache = server.cache("nt").await;
        let other = server.cache("nt").await;
        let policy = policy("nt").with_none_ttl(Duration::from_secs(30)).unwrap();
        let loads = AtomicU32::new(0);
        let read = |cache: &Cache, id: u32, answer: Option<u32>| {
            let (cache, policy, loads) = (cache.clone(), policy, &loads);
            async move {
                let load = async {
                    loads.fetch_add(1, SeqCst);
                    answer
                };
                cache
                    .fetch(&Key::raw(format!("nt:{id}")), &policy, load)
                    .await
            }
        };
        for id in 0..40 {
            assert_eq!(read(&cache, id, Some(id)).await, Some(id));
        }
        for id in 40..45 {
            assert_eq!(read(&cache, id, None).await, None);
        }
        cache.settle().await;
        let loaded = loads.load(SeqCst);
        assert_eq!(loaded, 45);
        let mut admin = server.conn().await;
        let fresh = AtomicU32::new(1000);
        // Back in lease-first mode (40 misses of new rows), then `check` is read, by the
        // lease script.
        macro_rules! by_script {
            ($id:expr, $answer:expr, $expected:expr) => {{
                for _ in 0..40 {
                    let id = fresh.fetch_add(1, SeqCst);
                    assert_eq!(read(&cache, id, Some(id)).await, Some(id));
                }
                cache.settle().await;
                let scripts = cached_redis_tests::command_calls(&mut admin, "evalsha").await;
                let loaded = loads.load(SeqCst);
                assert_eq!(read(&cache, $id, $answer).await, $expected);
                let now = cached_redis_tests::command_calls(&mut admin, "evalsha").await;
                assert!(now > scripts, "read by the lease script");
                loads.load(SeqCst) - loaded
            }};
        }
        assert_eq!(by_script!(41, Some(1), None), 0, "a cached None is a hit");
        // An update from another process, then one from this one.
        let key = Key::raw("nt:3");
        assert!(
            other
                .update(&key, |v: &mut Option<u32>| *v = Some(333))
                .await
                .unwrap()
        );
        assert_eq!(by_script!(3, Some(0), Some(333)), 0);
        assert!(
            cache
                .update(&key, |v: &mut Option<u32>| *v = Some(444))
                .await
                .unwrap()
        );
        assert_eq!(by_script!(3, Some(0), Some(444)), 0);
        assert!(other.invalidate(&key).await.unwrap());
        assert_eq!(
            by_script!(3, Some(555), Some(555)),
            1,
            "loaded after the invalidation"
        );
        cache.settle().await;
        cached_redis_tests::assert_no_state_left(&cache).await;
    })
    .await
    .expect("bounded");
}
