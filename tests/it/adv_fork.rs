//! A process forked after its first lease must not draw its parent's lease tokens. Alone in
//! its test binary: a fork copies only the forking thread, and another test's thread could
//! hold a lock (the environment's, stdout's) that the child would then wait on for ever.

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use cached_redis::{Cache, Key};
use cached_redis_tests::RedisServer;

use cached_redis_tests::rows::{call, policy};

/// Found (random.rs, `token()` / `process_id()`): the process id in a lease token is now cached
/// in a `OnceLock`, so a process forked after its first lease (a pre-fork server, a Python
/// worker pool with a Rust extension) builds its tokens from its parent's pid, counter and
/// thread RNG state: the first lease token each of them draws after the fork is the same
/// string. The lease script treats a lease holding the caller's own token as the caller's
/// (`ACQUIRE`: "a lease that already holds our token is ours"), so both processes are granted
/// the one lease and both load the cold key: two loads across processes. Before the change
/// `std::process::id()` was asked at each token, and the child's tokens differed.
///
/// Fails with: `assertion left == right failed: two processes sharing the Redis loaded one
/// cold key 2 times ... left: 2 right: 1`.
// Failed on 7b69cbe (found by the adversary, fixed since).
#[test]
fn found_a_forked_process_draws_its_parents_lease_token_and_both_load() {
    let server = RedisServer::start();
    let url = server.url();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    // Before the fork: one miss on this thread (its token caches the pid and seeds the
    // thread's RNG), and nothing else running in this runtime.
    runtime().block_on(async {
        let cache = Cache::builder(&url)
            .namespace("fork-warm")
            .op_timeout(Duration::from_secs(5))
            .build()
            .await
            .unwrap();
        let loads = AtomicU32::new(0);
        assert_eq!(call(&cache, "fork-warm", 1, &loads).await, Ok(1));
        cache.settle().await;
    });

    // Both processes read one cold key; each load counts itself in Redis and waits (at most
    // 3 s) for a second load, so both are inside the lease's window when they ask for it.
    let read = |url: &str| -> Result<u64, String> {
        runtime().block_on(async {
            let cache = Cache::builder(url)
                .namespace("fork")
                .op_timeout(Duration::from_secs(5))
                .build()
                .await
                .unwrap();
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let load = async {
                let mut seen: u64 = redis::cmd("INCR")
                    .arg("fork:loads")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let deadline = Instant::now() + Duration::from_secs(3);
                while seen < 2 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    seen = redis::cmd("GET")
                        .arg("fork:loads")
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<u64, String>(7)
            };
            let answer = tokio::time::timeout(
                Duration::from_secs(20),
                cache.fetch(&Key::raw("shared"), &policy("fork"), load),
            )
            .await
            .map_err(|_| "hung".to_string())?;
            cache.settle().await;
            // Both reached Redis: neither load ran for want of it.
            let stats = cache.stats();
            if stats.fallbacks + stats.writes_refused + stats.redis_errors > 0 {
                return Err(format!("Redis trouble: {stats:?}"));
            }
            answer
        })
    };

    // SAFETY: the child runs only this thread's code and leaves with `_exit`, running no
    // destructor of state it shares with its parent.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        let ok = std::panic::catch_unwind(|| read(&url) == Ok(7)).unwrap_or(false);
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let here = read(&url);
    let mut status = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if done == child {
            break;
        }
        if Instant::now() > deadline {
            unsafe { libc::kill(child, libc::SIGKILL) };
            panic!("the forked process hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(here, Ok(7));
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked process's call failed: {status}"
    );
    let loads: u64 = runtime().block_on(async {
        let mut conn = server.conn().await;
        redis::cmd("GET")
            .arg("fork:loads")
            .query_async(&mut conn)
            .await
            .unwrap()
    });
    assert_eq!(
        loads, 1,
        "two processes sharing the Redis loaded one cold key {loads} times: the forked one drew \
         its parent's lease token, and the lease script granted the one lease to both"
    );
}
