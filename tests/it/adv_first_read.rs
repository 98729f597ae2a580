//! Adversarial tests of two changes: calls of a function that nearly always misses start with
//! the lease script (`read/first_read.rs`), and one timer task per cache keeps each Redis
//! call's timeout from waking the timer driver (`conn/timer_anchor.rs`), with lease tokens
//! built without `format!` (`random::token`).
//!
//! `found_*` tests failed on the code they were written against (7b69cbe), for the reason in
//! their comment, and pass since their fix; `held_*` tests are attacks that the code
//! withstood. The fork attack is in `adv_fork.rs`, alone in its binary: a fork copies only
//! the forking thread, and other tests' threads could hold a lock the child then waits on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key};
use cached_redis_tests::{Gate, Proxy, RedisServer, eventually, get_raw};

/// Bounds every test: a hang fails instead of blocking the run.
const BOUND: Duration = Duration::from_secs(60);

use cached_redis_tests::rows::{call, lease_first, policy, proxied};

/// `SET key bytes PX 60000`, bytes as they are.
async fn set_bytes(conn: &mut redis::aio::MultiplexedConnection, key: &str, bytes: &[u8]) {
    let () = redis::cmd("SET")
        .arg(key)
        .arg(bytes)
        .arg("PX")
        .arg(60_000)
        .query_async(conn)
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Bugs
// ---------------------------------------------------------------------------------------------

/// Found (read/lead.rs, `first_read_answered`): against a black-holed Redis (SIGSTOPped: its
/// port accepts, nothing answers), a call that starts with the lease script waits for the
/// script's `op_timeout`, then sends a `GET` and waits for *its* `op_timeout` too, before the
/// loader runs: two `op_timeout`s. The README promises "refused, paused, black-holed or
/// restarted, every call returns the loader's result within `op_timeout`", and a call that
/// starts with a `GET` does (its GET times out, it loads without asking again: measured here on
/// a second cache as the control). The fallback `GET` after an unanswered script is sent even
/// when the script was not answered at all (`Lease::Unavailable`, not only `WritesRefused`).
///
/// Fails with: `a lease-first call against a black-holed Redis took 802.9ms (op_timeout
/// 400ms; a GET-first call took 400.8ms)`.
// Failed on 7b69cbe (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_lease_first_call_against_a_black_holed_redis_waits_two_op_timeouts() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let op_timeout = Duration::from_millis(400);
        let build = |ns: &str| {
            server
                .cache_builder(ns)
                .op_timeout(op_timeout)
                .breaker_threshold(100)
                .build()
        };
        let (first, control) = (
            build("bh-first").await.unwrap(),
            build("bh-get").await.unwrap(),
        );
        lease_first(&first, "bh", 0).await;
        // The control reads first with a GET (one miss: its connections are up).
        let loads = AtomicU32::new(0);
        assert_eq!(call(&control, "bh", 0, &loads).await, Ok(0));
        control.settle().await;

        server.pause();
        let timed = |cache: Cache| async move {
            let loads = AtomicU32::new(0);
            let started = Instant::now();
            let answer = call(&cache, "bh", 1000, &loads).await;
            (answer, loads.into_inner(), started.elapsed())
        };
        let (answer, loaded, get_first) = timed(control.clone()).await;
        assert_eq!((answer, loaded), (Ok(1000), 1));
        let (answer, loaded, took) = timed(first.clone()).await;
        server.resume();
        assert_eq!((answer, loaded), (Ok(1000), 1), "the loader answers");
        assert!(
            get_first < op_timeout * 3 / 2,
            "control: a GET-first call took {get_first:?}"
        );
        assert!(
            took < op_timeout * 3 / 2,
            "a lease-first call against a black-holed Redis took {took:?} (op_timeout \
             {op_timeout:?}; a GET-first call took {get_first:?})"
        );
    })
    .await
    .expect("bounded");
}

/// Found (read/fetch.rs `miss`, read/lead.rs `first_read_answered`): in lease-first mode a call
/// does not read before it joins its key's load in this process, and a caller that joined is
/// counted by nothing but `coalesced`: neither a hit nor a miss. Concurrent calls of a *cached*
/// key that began before the first of them sent its lease script join it and take the value
/// it read, so `hits` (documented as "calls answered from Redis") counts one call of seven,
/// and the other six are `coalesced` (documented as "callers that joined a load ... instead
/// of starting one": no load ran) with outcome `waited`. The same seven calls in GET-first
/// mode count seven hits; a dashboard's hits and hit ratio change with the function's score.
///
/// Made deterministic: the seven calls begin while the key's write-back is in flight (its
/// reply held at the proxy: each call waits for it after it began), and a `CLIENT PAUSE
/// WRITE` holds the first one's lease script at Redis until the other six have joined it.
///
/// Fails with: `7 calls of a cached key, all answered from Redis: hits counted 1, misses 0,
/// coalesced 6 ... left: 1 right: 7`.
// Failed on 7b69cbe (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_concurrent_lease_first_hits_are_not_counted_as_hits() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let proxy = Proxy::start(server.port()).await;
        let mut admin = server.conn().await;
        // Control: a function reading first with a GET counts seven hits.
        let (cache, writes) = proxied(&proxy, &mut admin, "joined-get").await;
        let (hits, misses, coalesced) =
            seven_calls_of_a_key_being_written_back(&cache, "joined", &proxy, writes, &mut admin)
                .await;
        assert_eq!((hits, misses, coalesced), (7, 0, 0), "control, GET-first");

        // A proxy of its own: the writes connection found is this cache's.
        let proxy = Proxy::start(server.port()).await;
        let (cache, writes) = proxied(&proxy, &mut admin, "joined").await;
        lease_first(&cache, "joined", 0).await;
        let (hits, misses, coalesced) =
            seven_calls_of_a_key_being_written_back(&cache, "joined", &proxy, writes, &mut admin)
                .await;
        assert_eq!(
            hits,
            7,
            "7 calls of a cached key, all answered from Redis: hits counted {hits}, misses \
             {misses}, coalesced {coalesced}: {:?}",
            cache.stats()
        );
    })
    .await
    .expect("bounded");
}

/// A miss of row 500 of `name` whose write-back's reply is held, then seven calls of the
/// row that begin while it is in flight; a `CLIENT PAUSE WRITE` holds any lease script they
/// send at Redis until six calls joined a seventh (or, reading first with a GET, for a
/// moment). Returns the hits, misses and coalesced callers those seven calls counted.
async fn seven_calls_of_a_key_being_written_back(
    cache: &Cache,
    name: &'static str,
    proxy: &Proxy,
    writes: usize,
    admin: &mut redis::aio::MultiplexedConnection,
) -> (u64, u64, u64) {
    let loads = Arc::new(AtomicU32::new(0));
    let key = Key::raw(format!("{name}:500"));
    let load = async {
        loads.fetch_add(1, SeqCst);
        proxy.hold_replies(writes);
        Ok::<u32, String>(500)
    };
    assert_eq!(cache.fetch(&key, &policy(name), load).await, Ok(500));
    let before = cache.stats();

    // Seven calls of the row begin, and wait for its write-back.
    let begun = Arc::new(AtomicU32::new(0));
    let mut calls = Vec::new();
    for _ in 0..7 {
        let (cache, loads, begun) = (cache.clone(), loads.clone(), begun.clone());
        calls.push(tokio::spawn(async move {
            let read = call(&cache, name, 500, &loads);
            FirstPoll::new(read, begun).await
        }));
    }
    let all_begun = || async { begun.load(SeqCst) == 7 };
    assert!(eventually(Duration::from_secs(10), all_begun).await);
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(20_000)
        .arg("WRITE")
        .query_async(admin)
        .await
        .unwrap();
    proxy.release_replies(writes);
    // Six calls join the first, or (since `adv_first_read2.rs`'s fixes, a lease-first call
    // finding its key's load running reads with a GET) six hit while the first one's script
    // is held.
    let joined = || async {
        let now = cache.stats();
        now.coalesced == before.coalesced + 6 || now.hits >= before.hits + 6
    };
    let settled = eventually(Duration::from_secs(10), joined).await;
    let () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(admin)
        .await
        .unwrap();
    assert!(
        settled,
        "six calls join the first, or seven hit: {:?}",
        cache.stats()
    );
    for call in calls {
        assert_eq!(call.await.unwrap(), Ok(500));
    }
    assert_eq!(loads.load(SeqCst), 1, "every call answered from Redis");
    let stats = cache.stats();
    (
        stats.hits - before.hits,
        stats.misses - before.misses,
        stats.coalesced - before.coalesced,
    )
}

/// A future that counts itself in `polled` once its first poll returned (a call's first poll
/// takes the moment it began).
struct FirstPoll<F> {
    inner: std::pin::Pin<Box<F>>,
    polled: Option<Arc<AtomicU32>>,
}

impl<F: std::future::Future> FirstPoll<F> {
    fn new(inner: F, polled: Arc<AtomicU32>) -> FirstPoll<F> {
        FirstPoll {
            inner: Box::pin(inner),
            polled: Some(polled),
        }
    }
}

impl<F: std::future::Future> std::future::Future for FirstPoll<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let answer = self.inner.as_mut().poll(cx);
        if let Some(polled) = self.polled.take() {
            polled.fetch_add(1, SeqCst);
        }
        answer
    }
}

/// Found (conn/timer_anchor.rs): the anchor task holds only its state, never learns that its
/// cache was dropped, and sleeps `op_timeout / 2` twice before it notices it is idle: a
/// cache dropped leaves a task alive for up to `op_timeout` (up to a day is accepted). With
/// `op_timeout` 10 minutes, each of 20 caches built, used once and dropped leaves a task behind
/// for 10 minutes; the same with the default `op_timeout` (control, first) leaves none.
///
/// Fails with: `20 caches dropped, yet 20 more tasks alive than before them`.
// Failed on 7b69cbe (found by the adversary, fixed since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_a_dropped_cache_leaves_its_timer_anchor_task_alive_for_op_timeout() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let metrics = tokio::runtime::Handle::current().metrics();
        let churn = |op_timeout: Duration, ns: &'static str| {
            let server = &server;
            async move {
                for _ in 0..20 {
                    let cache = server
                        .cache_builder(ns)
                        .op_timeout(op_timeout)
                        .build()
                        .await
                        .unwrap();
                    let loads = AtomicU32::new(0);
                    assert_eq!(call(&cache, ns, 1, &loads).await, Ok(1));
                    cache.settle().await;
                    drop(cache);
                }
            }
        };
        let baseline = metrics.num_alive_tasks();
        churn(Duration::from_millis(250), "churn-short").await;
        let back = || async { metrics.num_alive_tasks() <= baseline };
        assert!(
            eventually(Duration::from_secs(5), back).await,
            "control: caches with a short op_timeout leave {} tasks",
            metrics.num_alive_tasks() - baseline
        );

        churn(Duration::from_secs(600), "churn-long").await;
        eventually(Duration::from_secs(5), back).await;
        let left = metrics.num_alive_tasks().saturating_sub(baseline);
        assert_eq!(
            left, 0,
            "20 caches dropped, yet {left} more tasks alive than before them"
        );
    })
    .await
    .expect("bounded");
}

// ---------------------------------------------------------------------------------------------
// Attacks that held
// ---------------------------------------------------------------------------------------------

/// Lease-first under `maxmemory` with `noeviction` (writes refused with `OOM`): a cached key
/// is still a hit (the script answers the value before it writes), a cold one loads without a
/// lease and is counted as a refused write, and the function reads first with a GET again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_lease_first_under_oom_still_hits() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let cache = server.cache("oom").await;
        lease_first(&cache, "oom", 0).await;
        let mut admin = server.conn().await;
        cached_redis_tests::config_set(&mut admin, "maxmemory-policy", "noeviction").await;
        cached_redis_tests::config_set(&mut admin, "maxmemory", "1").await;

        let loads = AtomicU32::new(0);
        let before = cache.stats();
        assert_eq!(call(&cache, "oom", 5, &loads).await, Ok(5));
        assert_eq!(loads.load(SeqCst), 0, "a hit under OOM");
        assert_eq!(cache.stats().hits, before.hits + 1);
        assert_eq!(call(&cache, "oom", 500, &loads).await, Ok(500));
        assert_eq!(loads.load(SeqCst), 1);
        let stats = cache.stats();
        assert_eq!(stats.writes_refused, before.writes_refused + 1, "{stats:?}");
        for id in 0..20 {
            assert_eq!(call(&cache, "oom", id, &loads).await, Ok(id));
        }
        assert_eq!(loads.load(SeqCst), 1, "every cached row a hit");
        cached_redis_tests::config_set(&mut admin, "maxmemory", "0").await;
    })
    .await
    .expect("bounded");
}

/// Lease-first on a read-only replica (every write refused with `READONLY`): hits of what the
/// primary stored, cold keys loaded without a lease, nothing stored, no errors surfaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_lease_first_on_a_read_only_replica() {
    tokio::time::timeout(BOUND, async {
        let primary = RedisServer::start();
        let replica = RedisServer::start();
        replica.replicate(primary.port()).await;
        let writer = primary.cache("ro").await;
        let reader = replica.cache("ro").await;
        lease_first(&writer, "ro", 0).await;
        // On the replica: 40 misses of rows the primary does not hold.
        let loads = AtomicU32::new(0);
        for id in 100..140 {
            assert_eq!(call(&reader, "ro", id, &loads).await, Ok(id));
        }
        assert_eq!(loads.load(SeqCst), 40);
        let mut conn = replica.conn().await;
        assert!(
            eventually(Duration::from_secs(5), || {
                let mut conn = conn.clone();
                async move { get_raw(&mut conn, "ro:{ro:39}").await.is_some() }
            })
            .await,
            "replicated"
        );
        let loads = AtomicU32::new(0);
        let score_high = AtomicU32::new(0);
        // Raise the score again (READONLY reset it), then read cached rows.
        for id in 200..240 {
            assert_eq!(call(&reader, "ro", id, &score_high).await, Ok(id));
        }
        let before = reader.stats();
        for id in 0..40 {
            assert_eq!(call(&reader, "ro", id, &loads).await, Ok(id));
        }
        assert_eq!(loads.load(SeqCst), 0, "{:?}", reader.stats());
        assert_eq!(reader.stats().hits, before.hits + 40);
        let _ = &mut conn;
    })
    .await
    .expect("bounded");
}

/// Lease-first over corrupt bytes (not UTF-8, not an envelope) and over a key of the wrong
/// type: each is loaded once, replaced, counted as a miss, and read back as a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_lease_first_over_corrupt_bytes() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let cache = server.cache("corrupt").await;
        lease_first(&cache, "corrupt", 0).await;
        let mut conn = server.conn().await;
        set_bytes(
            &mut conn,
            "corrupt:{corrupt:900}",
            &[0xff, 0xfe, 0x00, 0x80],
        )
        .await;
        let _: () = redis::cmd("LPUSH")
            .arg("corrupt:{corrupt:901}")
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
        set_bytes(&mut conn, "corrupt:{corrupt:902}", b"").await;
        let loads = AtomicU32::new(0);
        let before = cache.stats();
        for id in [900, 901, 902] {
            assert_eq!(call(&cache, "corrupt", id, &loads).await, Ok(id));
        }
        assert_eq!(loads.load(SeqCst), 3);
        cache.settle().await;
        for id in [900, 901, 902] {
            assert_eq!(call(&cache, "corrupt", id, &loads).await, Ok(id));
        }
        assert_eq!(loads.load(SeqCst), 3, "replaced: hits now");
        let stats = cache.stats();
        assert_eq!(stats.misses, before.misses + 3, "{stats:?}");
        assert_eq!(stats.hits, before.hits + 3, "{stats:?}");
        cached_redis_tests::assert_no_state_left(&cache).await;
    })
    .await
    .expect("bounded");
}

/// The lease script's answer is held at the proxy while another process invalidates the
/// entry and a new call of the key begins and joins the held load: the value the script
/// read (from before the invalidation) goes to the first caller only; the new call reads
/// again and loads the new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_lease_first_value_read_before_an_invalidation_is_not_handed_to_a_later_call() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let proxy = Proxy::start(server.port()).await;
        let mut admin = server.conn().await;
        let (cache, writes) = proxied(&proxy, &mut admin, "inv").await;
        let other = server.cache("inv").await;
        lease_first(&cache, "inv", 0).await;
        let key = Key::raw("inv:3");
        let version = Arc::new(AtomicU32::new(1));
        let read = |cache: Cache| {
            let (key, version) = (key.clone(), version.clone());
            async move {
                let load = async { Ok::<u32, String>(version.load(SeqCst) * 100) };
                cache.fetch(&key, &policy("inv"), load).await
            }
        };
        // The stored value is 3 (from the warm-up); replace it with version 1's.
        assert!(other.invalidate(&key).await.unwrap());
        assert_eq!(read(other.clone()).await, Ok(100));
        other.settle().await;

        let scripts = cached_redis_tests::command_calls(&mut admin, "evalsha").await;
        proxy.hold_replies(writes);
        let first = tokio::spawn(read(cache.clone()));
        // The script ran (its read reached Redis; its reply is held): one more `EVALSHA`.
        let ran = || async {
            let mut admin = server.conn().await;
            cached_redis_tests::command_calls(&mut admin, "evalsha").await > scripts
        };
        assert!(eventually(Duration::from_secs(5), ran).await);
        version.store(2, SeqCst);
        assert!(other.invalidate(&key).await.unwrap(), "invalidated");
        // The later call finds the held read running: since `adv_first_read2.rs`'s fixes it
        // reads Redis itself (a GET, whose replies are not held) rather than join it.
        let before = cache.stats().coalesced;
        let later = tokio::spawn(read(cache.clone()));
        let joined = || async { cache.stats().coalesced > before || later.is_finished() };
        assert!(eventually(Duration::from_secs(5), joined).await);
        proxy.release_replies(writes);
        assert_eq!(
            first.await.unwrap(),
            Ok(100),
            "its read overlapped the write"
        );
        assert_eq!(
            later.await.unwrap(),
            Ok(200),
            "began after the invalidation"
        );
    })
    .await
    .expect("bounded");
}

/// A lease-first leader cancelled while its script's reply is held (the script ran: it holds
/// the lease): the lease is released in the background, and the next caller loads at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_lease_first_leader_cancelled_at_its_script_releases_the_lease() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let proxy = Proxy::start(server.port()).await;
        let mut admin = server.conn().await;
        let (cache, writes) = proxied(&proxy, &mut admin, "cancel").await;
        lease_first(&cache, "cancel", 0).await;
        let lease = "cancel:{cancel:777}:lease";

        proxy.hold_replies(writes);
        let loads = Arc::new(AtomicU32::new(0));
        let leader = tokio::spawn({
            let (cache, loads) = (cache.clone(), loads.clone());
            async move { call(&cache, "cancel", 777, &loads).await }
        });
        let held = || async {
            let mut admin = server.conn().await;
            get_raw(&mut admin, lease).await.is_some()
        };
        assert!(
            eventually(Duration::from_secs(5), held).await,
            "the script took the lease"
        );
        leader.abort();
        let _ = leader.await;
        let released = || async {
            let mut admin = server.conn().await;
            get_raw(&mut admin, lease).await.is_none()
        };
        assert!(
            eventually(Duration::from_secs(5), released).await,
            "the release reached Redis"
        );
        proxy.release_replies(writes);
        let started = Instant::now();
        assert_eq!(call(&cache, "cancel", 777, &loads).await, Ok(777));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(loads.load(SeqCst), 1);
        cache.settle().await;
        cached_redis_tests::assert_no_state_left(&cache).await;
    })
    .await
    .expect("bounded");
}

/// Two caches (processes) on one Redis, both in lease-first mode, and a gate holding the
/// load: 40 callers, one load; an `update`-free invalidation after it is seen by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_lease_first_stampede_and_invalidation_across_caches() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let one = server.cache("st").await;
        let two = server.cache("st").await;
        lease_first(&one, "st", 0).await;
        lease_first(&two, "st", 100).await;
        let (gate, loads) = (Arc::new(Gate::new()), Arc::new(AtomicU32::new(0)));
        let mut calls = Vec::new();
        for cache in [&one, &two] {
            for _ in 0..20 {
                let (cache, gate, loads) = (cache.clone(), gate.clone(), loads.clone());
                calls.push(tokio::spawn(async move {
                    let load = async {
                        loads.fetch_add(1, SeqCst);
                        gate.passed().await;
                        Ok::<u32, String>(1)
                    };
                    cache.fetch(&Key::raw("st:hot"), &policy("st"), load).await
                }));
            }
        }
        let waiting = || async {
            let (a, b) = (one.stats(), two.stats());
            a.coalesced + b.coalesced == 38 && a.lock_waits + b.lock_waits == 1
        };
        assert!(eventually(Duration::from_secs(10), waiting).await);
        gate.open();
        for call in calls {
            assert_eq!(call.await.unwrap(), Ok(1));
        }
        assert_eq!(loads.load(SeqCst), 1);
        one.settle().await;
        assert!(two.invalidate(&Key::raw("st:hot")).await.unwrap());
        let load = async { Ok::<u32, String>(2) };
        assert_eq!(
            one.fetch(&Key::raw("st:hot"), &policy("st"), load).await,
            Ok(2)
        );
    })
    .await
    .expect("bounded");
}

/// One cache whose connections run on a long-lived runtime, used from 30 short-lived
/// current-thread runtimes created and dropped in turn (each starts an anchor of its own once
/// the last one's went with its runtime), a third of them with a paused clock: every call
/// answers with the right value, none panics or hangs, and on running clocks the cache keeps
/// hitting. Then the long-lived runtime still hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_one_cache_across_runtimes_created_and_dropped_and_paused() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let cache = server
            .cache_builder("runtimes")
            .op_timeout(Duration::from_millis(300))
            .build()
            .await
            .unwrap();
        let loads = AtomicU32::new(0);
        assert_eq!(call(&cache, "runtimes", 0, &loads).await, Ok(0));
        cache.settle().await;
        lease_first(&cache, "runtimes", 1000).await;
        for round in 0..30u32 {
            let shared = cache.clone();
            let paused = round % 3 == 2;
            let hits = tokio::task::spawn_blocking(move || {
                let cache = shared;
                let mut builder = tokio::runtime::Builder::new_current_thread();
                builder.enable_all();
                if paused {
                    builder.start_paused(true);
                }
                let runtime = builder.build().unwrap();
                let hits = runtime.block_on(async {
                    let loads = AtomicU32::new(0);
                    let before = cache.stats().hits;
                    for id in [round * 10, round * 10, 1000 + round] {
                        let answer = tokio::time::timeout(
                            Duration::from_secs(5),
                            call(&cache, "runtimes", id, &loads),
                        )
                        .await;
                        assert_eq!(answer, Ok(Ok(id)), "round {round}");
                        cache.settle().await;
                    }
                    cache.stats().hits - before
                });
                drop(runtime);
                hits
            })
            .await
            .unwrap();
            if !paused {
                assert!(hits >= 2, "round {round}: {hits} hits, {:?}", cache.stats());
            }
        }
        let loads = AtomicU32::new(0);
        assert_eq!(call(&cache, "runtimes", 1005, &loads).await, Ok(1005));
        assert_eq!(loads.load(SeqCst), 0, "a hit: {:?}", cache.stats());
    })
    .await
    .expect("bounded");
}

/// On a Redis Cluster (3 primaries), two caches in lease-first mode: 40 callers of a cold key
/// in two processes share one load; an invalidation from one is seen by the other; and with
/// writes paused on the key's primary, a lease-first hit is still answered from the cache
/// within `op_timeout` (its script held, then a GET).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_lease_first_on_a_cluster() {
    let _alone = cached_redis_tests::one_cluster_at_a_time().await;
    tokio::time::timeout(BOUND * 2, async {
        let cluster = cached_redis_tests::RedisCluster::start_with_replicas(0);
        let urls = cluster.urls();
        let build = || {
            Cache::cluster_builder(&urls.iter().map(String::as_str).collect::<Vec<_>>())
                .namespace("cl-first")
                .op_timeout(Duration::from_millis(700))
                .breaker_threshold(100)
                .build()
        };
        let (one, two) = (build().await.unwrap(), build().await.unwrap());
        lease_first(&one, "clf", 0).await;
        lease_first(&two, "clf", 100).await;

        let (gate, loads) = (Arc::new(Gate::new()), Arc::new(AtomicU32::new(0)));
        let mut calls = Vec::new();
        for cache in [&one, &two] {
            for _ in 0..20 {
                let (cache, gate, loads) = (cache.clone(), gate.clone(), loads.clone());
                calls.push(tokio::spawn(async move {
                    let load = async {
                        loads.fetch_add(1, SeqCst);
                        gate.passed().await;
                        Ok::<u32, String>(1)
                    };
                    cache
                        .fetch(&Key::raw("clf:hot"), &policy("clf"), load)
                        .await
                }));
            }
        }
        let waiting = || async {
            let (a, b) = (one.stats(), two.stats());
            a.coalesced + b.coalesced == 38 && a.lock_waits + b.lock_waits == 1
        };
        assert!(
            eventually(Duration::from_secs(10), waiting).await,
            "{:?} {:?}",
            one.stats(),
            two.stats()
        );
        gate.open();
        for call in calls {
            assert_eq!(call.await.unwrap(), Ok(1));
        }
        assert_eq!(
            loads.load(SeqCst),
            1,
            "one load for 40 callers on a cluster"
        );
        one.settle().await;
        two.settle().await;
        assert!(two.invalidate(&Key::raw("clf:hot")).await.unwrap());
        let load = async { Ok::<u32, String>(2) };
        assert_eq!(
            one.fetch(&Key::raw("clf:hot"), &policy("clf"), load).await,
            Ok(2)
        );
        one.settle().await;

        // Writes paused on the primary of row 7 (cached by the warm-up). The first call's
        // script is held: past half its `op_timeout` it reads with a GET, within the other
        // half (changed after
        // `found_a_lease_first_call_against_a_black_holed_redis_waits_two_op_timeouts`): a
        // hit. The function's calls start with a GET again: the next one is a hit too.
        let primary = cluster
            .primary_holding("cl-first:{clf:7}")
            .expect("a primary holds the row");
        cluster.cli(primary, &["CLIENT", "PAUSE", "5000", "WRITE"]);
        let timed = || async {
            let started = Instant::now();
            let loads = AtomicU32::new(0);
            let answer = call(&one, "clf", 7, &loads).await;
            (answer, loads.into_inner(), started.elapsed())
        };
        let (first, first_loads, first_took) = timed().await;
        let (hit, loads, took) = timed().await;
        cluster.cli(primary, &["CLIENT", "UNPAUSE"]);
        assert_eq!(
            (first, first_loads),
            (Ok(7), 0),
            "the held script's call hits"
        );
        assert!(
            first_took < Duration::from_millis(1050),
            "took {first_took:?}"
        );
        assert_eq!((hit, loads), (Ok(7), 0), "a hit under a write pause");
        assert!(took < Duration::from_millis(1050), "took {took:?}");
    })
    .await
    .expect("bounded");
}

/// The lease script's answer (the old value) is held at the proxy while another process
/// `update`s the entry and a new call of the key begins and joins the held read: the new
/// call is answered with the updated value, never the one read before the update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_lease_first_value_read_before_an_update_is_not_handed_to_a_later_call() {
    tokio::time::timeout(BOUND, async {
        let server = RedisServer::start();
        let proxy = Proxy::start(server.port()).await;
        let mut admin = server.conn().await;
        let (cache, writes) = proxied(&proxy, &mut admin, "upd").await;
        let other = server.cache("upd").await;
        lease_first(&cache, "upd", 0).await;
        let key = Key::raw("upd:3");
        let read = |cache: Cache| {
            let key = key.clone();
            async move {
                let load = async { Ok::<u32, String>(999) };
                cache.fetch(&key, &policy("upd"), load).await
            }
        };

        let scripts = cached_redis_tests::command_calls(&mut admin, "evalsha").await;
        proxy.hold_replies(writes);
        let first = tokio::spawn(read(cache.clone()));
        let ran = || async {
            let mut admin = server.conn().await;
            cached_redis_tests::command_calls(&mut admin, "evalsha").await > scripts
        };
        assert!(eventually(Duration::from_secs(5), ran).await);
        assert!(
            other.update(&key, |v: &mut u32| *v += 1000).await.unwrap(),
            "updated"
        );
        // The later call finds the held read running: since `adv_first_read2.rs`'s fixes it
        // reads Redis itself (a GET, whose replies are not held) rather than join it.
        let before = cache.stats().coalesced;
        let later = tokio::spawn(read(cache.clone()));
        let joined = || async { cache.stats().coalesced > before || later.is_finished() };
        assert!(eventually(Duration::from_secs(5), joined).await);
        proxy.release_replies(writes);
        assert_eq!(
            first.await.unwrap(),
            Ok(3),
            "its read overlapped the update"
        );
        assert_eq!(
            later.await.unwrap(),
            Ok(1003),
            "began after the update returned"
        );
    })
    .await
    .expect("bounded");
}
