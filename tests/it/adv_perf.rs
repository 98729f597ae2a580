//! Adversarial tests of the hot-path commits: the `{"v":` shortcut of a Redis hit's decode
//! (`stored/codec.rs`), the Redis key rendered into a per-thread spare buffer (`key/spare.rs`,
//! `lease/mod.rs`), and the u64-nanosecond clock of near copies, the tracking lag and the
//! in-memory cache's deadlines (`local/clock.rs`, `memory/mod.rs`). Redis is real; bytes are
//! crafted and written behind the cache's back from another connection.
//!
//! The oracle of the codec tests is the read that the shortcut replaced: the whole envelope,
//! `{"v": T}` with serde's derive, read by `serde_json::from_slice` (what `decode` did for a
//! JSON value before the shortcut, and what `update_*` still does).
//!
//! Three tests (marked "Found") failed on the code they were written against (commit be1d18c)
//! and passed with `stored/codec.rs` as it was before the shortcut (bcb253b's parent). All
//! three came from one cause, the shortcut accepting bytes the whole read refuses; the shortcut
//! now reads only the exact shape this build writes (`stored/value_first.rs`), and an update
//! reads through it too. The others
//! are attacks that held: crafted well-formed envelopes, hit/update agreement on entries this
//! crate writes, key storms over the spare buffers (four threads, nested calls, cancellation,
//! panicking loaders, hashed keys), and the nanosecond clock's deadlines (in-memory TTL and
//! `Cache::ttl`, near copies against a jittered Redis TTL, `near`, and the tracking lag).

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use cached_redis::{Cache, Jitter, Key, MAX_KEY_LEN, Policy};
use cached_redis_tests::{
    Proxy, RedisServer, Rng, escaped, get_raw, near_cache, pttl, scan_keys, until_near_hit,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

fn policy(name: &'static str) -> Policy {
    Policy::new(name, Duration::from_secs(60)).unwrap()
}

/// The envelope as the whole read sees it (serde's derive: unknown fields ignored, a
/// duplicate `v` refused).
#[derive(Deserialize)]
struct Envelope<T> {
    v: T,
}

/// What the whole-envelope read makes of `bytes`: `Some(v)`, or `None` (undecodable).
fn whole_read<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice::<Envelope<T>>(bytes)
        .ok()
        .map(|e| e.v)
}

async fn set_raw(conn: &mut redis::aio::MultiplexedConnection, key: &str, bytes: &[u8]) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(bytes)
        .query_async(conn)
        .await
        .expect("SET");
}

/// What one crafted value did to a call.
#[derive(Debug, PartialEq)]
enum Served<T> {
    /// The call answered `T` without running its loader.
    Hit(T),
    /// The loader ran (the value was a miss).
    Loaded,
}

/// Writes each of `cases` under its own key behind the cache's back, calls through the cache
/// with a loader answering `fresh`, and returns the cases where the call did not do what the
/// whole-envelope read says (a hit on its `v`, or a load where it refuses the bytes), as
/// `(bytes, expected, served)`.
async fn differential<T>(
    server: &RedisServer,
    cache: &Cache,
    label: &str,
    cases: &[&[u8]],
    fresh: T,
) -> Vec<String>
where
    T: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync + 'static,
{
    let mut conn = server.conn().await;
    let policy = policy("adv-perf-codec");
    let mut wrong = Vec::new();
    for (n, bytes) in cases.iter().enumerate() {
        let key = Key::builder()
            .text(label)
            .text(":")
            .part(&(n as u64))
            .build();
        let redis_key = cache.redis_key(&key);
        set_raw(&mut conn, &redis_key, bytes).await;
        let loaded = Arc::new(AtomicBool::new(false));
        let answer: Result<T, String> = cache
            .fetch(&key, &policy, {
                let (loaded, fresh) = (loaded.clone(), fresh.clone());
                async move {
                    loaded.store(true, Ordering::SeqCst);
                    Ok(fresh)
                }
            })
            .await;
        let answer = answer.expect("the loader never fails");
        let served = if loaded.load(Ordering::SeqCst) {
            assert_eq!(answer, fresh, "a load answers the loader's value");
            Served::Loaded
        } else {
            Served::Hit(answer)
        };
        let expected = match whole_read::<T>(bytes) {
            Some(v) => Served::Hit(v),
            None => Served::Loaded,
        };
        if served != expected {
            wrong.push(format!(
                "{:?}: the whole read says {expected:?}, the hit did {served:?}",
                String::from_utf8_lossy(bytes)
            ));
        }
        if expected == Served::Loaded {
            // The undecodable value was overwritten by the load.
            cache.settle().await;
            let stored = get_raw(&mut conn, &redis_key).await.expect("written back");
            if whole_read::<T>(&stored) != Some(fresh.clone()) {
                wrong.push(format!(
                    "{:?} was not overwritten: Redis holds {:?}",
                    String::from_utf8_lossy(bytes),
                    String::from_utf8_lossy(&stored)
                ));
            }
        }
    }
    wrong
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Account {
    id: u32,
    name: String,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Circle(u32),
    Square { side: u32 },
    Empty,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Loose {
    Number(u64),
    Text(String),
    Pair(u64, u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum Tagged {
    A { x: u64 },
    B { y: String },
}

// ---------------------------------------------------------------------------------------------
// 1. The `{"v":` shortcut of a Redis hit.
// ---------------------------------------------------------------------------------------------

/// Well-formed envelopes written by someone else (another build, a hand-written `SET`), with
/// values built to trip a reader that stops early: `}` and `,` and `"v":` inside strings,
/// escapes, nested objects, numbers at the edges of `u64`, `null`, a newer build's extra
/// fields before and after `v`, whitespace, enums (external, internal and untagged). A hit
/// serves exactly what the whole-envelope read serves, and reloads what it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_well_formed_envelopes_read_as_the_whole_envelope_reads_them() {
    let server = RedisServer::start();
    let cache = server.cache("adv-perf-wellformed").await;
    let mut wrong = Vec::new();

    let numbers: &[&[u8]] = &[
        br#"{"v":7}"#,
        br#"{"v":7,"at":1,"load_ms":2,"id":3}"#,
        br#"{"v":18446744073709551615,"at":1}"#,
        br#"{"v":18446744073709551616,"at":1}"#,
        br#"{"v":-1,"at":1}"#,
        br#"{"v":-0,"at":1}"#,
        br#"{"v":7.0,"at":1}"#,
        br#"{"v":1e2,"at":1}"#,
        br#"{"v":07,"at":1}"#,
        br#"{"v":7 ,"at":1}"#,
        br#"{"v": 7,"at":1}"#,
        b"{\"v\":\n7\n}",
        br#"{"v":7} "#,
        br#"{"v":"7","at":1}"#,
        br#"{"v":null,"at":1}"#,
        br#"{"v":true}"#,
        br#"{"v":[7],"at":1}"#,
        br#"{"v":{"x":7}}"#,
        br#"{"at":1,"v":7}"#,
        br#"{"v":7,"at":1,"newer":{"a":[1,2,{"b":"}"}]},"more":"\"}"}"#,
        br#"{"v":7,"at":1,"soft_until":9999999999999,"refresh":{"after_ms":5}}"#,
    ];
    wrong.extend(differential(&server, &cache, "num", numbers, 100u64).await);

    let strings: &[&[u8]] = &[
        br#"{"v":"plain","at":1}"#,
        br#"{"v":"}","at":1}"#,
        br#"{"v":",","at":1}"#,
        br#"{"v":"a\"},\"v\":\"b\"}","at":1}"#,
        br#"{"v":"\u0000\u00e9\ud83d\ude00\\","at":1}"#,
        br#"{"v":"\ud800","at":1}"#,
        br#"{"v":"tab	inside","at":1}"#,
        b"{\"v\":\"\xff\xfe\",\"at\":1}",
        b"{\"v\":\"caf\xc3\xa9\",\"at\":1}",
        br#"{"v":"x"}"#,
        br#"{"v":7,"at":1}"#,
    ];
    wrong.extend(differential(&server, &cache, "str", strings, "fresh".to_owned()).await);

    let options: &[&[u8]] = &[
        br#"{"v":null,"at":1}"#,
        br#"{"v":null}"#,
        br#"{"v":5,"at":1}"#,
        br#"{"v":"5","at":1}"#,
    ];
    wrong.extend(differential(&server, &cache, "opt", options, Some(100u64)).await);

    let accounts: &[&[u8]] = &[
        br#"{"v":{"id":1,"name":"a","tags":["}",","]},"at":1}"#,
        br#"{"v":{"id":1,"name":"a"},"at":1}"#,
        br#"{"v":{"id":1,"name":"a","added_by_newer":{"v":99}},"at":1,"id":4}"#,
        br#"{"v":{"name":"a","id":1,"name":"b"},"at":1}"#,
        br#"{"v":{"id":1},"at":1}"#,
        br#"{"v":{"id":1,"name":"a","tags":[]}}"#,
    ];
    let fresh = Account {
        id: 0,
        name: "fresh".into(),
        tags: vec![],
    };
    wrong.extend(differential(&server, &cache, "acct", accounts, fresh).await);

    let shapes: &[&[u8]] = &[
        br#"{"v":{"Circle":3},"at":1}"#,
        br#"{"v":{"Square":{"side":4}},"at":1}"#,
        br#"{"v":"Empty","at":1}"#,
        br#"{"v":{"Circle":3,"Square":{"side":4}},"at":1}"#,
        br#"{"v":"Triangle","at":1}"#,
    ];
    wrong.extend(differential(&server, &cache, "shape", shapes, Shape::Empty).await);

    let loose: &[&[u8]] = &[
        br#"{"v":7,"at":1}"#,
        br#"{"v":"7","at":1}"#,
        br#"{"v":[1,2],"at":1}"#,
        br#"{"v":[1,2,3],"at":1}"#,
        br#"{"v":{"x":1},"at":1}"#,
    ];
    let fresh = Loose::Text("fresh".into());
    wrong.extend(differential(&server, &cache, "loose", loose, fresh).await);

    let tagged: &[&[u8]] = &[
        br#"{"v":{"kind":"A","x":1},"at":1}"#,
        br#"{"v":{"x":1,"kind":"A"},"at":1}"#,
        br#"{"v":{"kind":"B","y":"}"},"at":1}"#,
        br#"{"v":{"kind":"C"},"at":1}"#,
    ];
    let fresh = Tagged::A { x: 0 };
    wrong.extend(differential(&server, &cache, "tagged", tagged, fresh).await);

    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Found (failed on be1d18c). Envelopes that start with a well-formed `{"v":<value>` and end in
/// `}` but are not one JSON object: a second `v`, bytes after the envelope's end (two
/// envelopes back to back, as an `APPEND` makes), a trailing comma, a field that does not
/// parse, invalid UTF-8 or unbalanced brackets after the value. The whole-envelope read
/// refuses every one (guarantee 6: "Garbage ... that does not decode: logged at warn, reloaded
/// and overwritten"), and did so on every hit before the shortcut; `update_*` still does. The
/// shortcut checks only the byte after `v` and the last byte, so a hit now serves the first
/// `v` of each, silently (no decode error counted, no reload), for the entry's whole TTL.
/// With `{"v":7,"v":8}` a reader that keeps the last duplicate (JavaScript's `JSON.parse`,
/// Python's `json`) reads 8 where this one serves 7.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_hit_does_not_serve_an_envelope_the_whole_read_refuses() {
    let server = RedisServer::start();
    let cache = server.cache("adv-perf-malformed").await;
    let malformed: &[&[u8]] = &[
        br#"{"v":7,"v":8}"#,
        br#"{"v":7,"at":1,"v":"eight"}"#,
        br#"{"v":7,"at":1,"load_ms":2,"id":3}{"v":8,"at":4,"load_ms":5,"id":6}"#,
        br#"{"v":7}}"#,
        br#"{"v":7},"x":{}"#,
        br#"{"v":7,}"#,
        br#"{"v":7,garbage}"#,
        br#"{"v":7,"at":}"#,
        br#"{"v":7,"at":1,"x":[}"#,
        b"{\"v\":7,\xff\xfe}",
        br#"{"v":7,"at":1,"load_ms":2,"id":3,"#,
    ];
    let wrong = differential(&server, &cache, "bad", malformed, 100u64).await;
    let decode_errors = cache.stats().decode_errors;
    let served = wrong.iter().filter(|w| w.contains("the hit did")).count();
    assert!(
        wrong.is_empty(),
        "{served} of {} malformed envelopes were served as hits ({decode_errors} decode \
         errors counted): {wrong:#?}",
        malformed.len()
    );
}

/// Found (failed on be1d18c). A hit and `update_*` disagree on the same bytes: the hit serves the
/// first `v` of `{"v":7,"v":8}` (see above), while `Cache::update` reads the whole envelope,
/// finds it undecodable and removes the entry instead of applying the change. A caller that
/// just read 7 and updates it to 8 is told `Ok(false)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_and_an_update_agree_on_an_envelope_the_whole_read_refuses() {
    let server = RedisServer::start();
    let cache = server.cache("adv-perf-agree").await;
    let mut conn = server.conn().await;
    let policy = policy("adv-perf-agree");
    let key = Key::raw("agree:1");
    let redis_key = cache.redis_key(&key);
    set_raw(
        &mut conn,
        &redis_key,
        br#"{"v":7,"at":1,"load_ms":0,"id":1,"v":8}"#,
    )
    .await;
    let loads = AtomicU64::new(0);
    let read: Result<u64, String> = cache
        .fetch(&key, &policy, async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(100)
        })
        .await;
    let hit = loads.load(Ordering::SeqCst) == 0;
    let updated = cache.update(&key, |v: &mut u64| *v += 1).await.unwrap();
    let after = get_raw(&mut conn, &redis_key).await;
    // A reload overwrote the bytes (the update then changes the new entry): no disagreement.
    assert!(
        !hit || updated,
        "the hit served the entry ({read:?}) but the update found it undecodable and \
         removed it (Redis now holds {:?})",
        after.as_deref().map(String::from_utf8_lossy)
    );
}

/// A value nested `depth` arrays deep.
fn nested(depth: usize) -> serde_json::Value {
    let mut value = serde_json::Value::from(1u8);
    for _ in 0..depth {
        value = serde_json::Value::Array(vec![value]);
    }
    value
}

/// Found (failed on be1d18c; low severity). serde_json's recursion limit counts the envelope's
/// own `{`: a value this crate wrote itself, nested one level short of the limit, decodes when
/// read alone (the shortcut) but not inside its envelope (the whole read). A hit now serves it
/// (before, every hit counted a decode error and reloaded), while `update_*` still reads the
/// whole envelope, calls it undecodable and removes the entry: an update of such an entry
/// never applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_nested_to_the_recursion_limit_is_updated_if_it_hits() {
    // The deepest value that reads alone but not inside an envelope, found rather than assumed.
    let depth = (1..400)
        .find(|&d| {
            let bytes = serde_json::to_vec(&nested(d)).unwrap();
            let wrapped = [br#"{"v":"#.as_slice(), &bytes, b"}"].concat();
            serde_json::from_slice::<serde_json::Value>(&bytes).is_ok()
                && whole_read::<serde_json::Value>(&wrapped).is_none()
        })
        .expect("a depth the envelope's own level tips over the limit");
    let server = RedisServer::start();
    let cache = server.cache("adv-perf-deep").await;
    let policy = policy("adv-perf-deep");
    let key = Key::raw("deep:1");
    let loads = AtomicU64::new(0);
    let load = || async {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok::<_, String>(nested(depth))
    };
    assert_eq!(cache.fetch(&key, &policy, load()).await, Ok(nested(depth)));
    cache.settle().await;
    assert_eq!(cache.fetch(&key, &policy, load()).await, Ok(nested(depth)));
    let hit = loads.load(Ordering::SeqCst) == 1;
    let updated = cache
        .update(&key, |v: &mut serde_json::Value| {
            *v = nested(depth - 1);
        })
        .await
        .unwrap();
    // Before the shortcut, the second call reloaded too (a decode error): no disagreement.
    assert!(
        !hit || updated,
        "depth {depth}: the second call hit but the update removed the entry as undecodable"
    );
}

/// What the shortcut serves is what an update then changes: for entries this crate wrote
/// (JSON, MessagePack, compressed), and for a newer build's extra fields, a hit and
/// `Cache::update` see the same value, and the hit after the update serves the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_and_an_update_see_the_same_value() {
    let server = RedisServer::start();
    let cache = server.cache("adv-perf-same").await;
    let mut conn = server.conn().await;
    let policy = policy("adv-perf-same");
    let written: [(&str, &[u8]); 4] = [
        (
            "plain",
            br#"{"v":"a},\"v\":\"b","at":1,"load_ms":0,"id":7}"#,
        ),
        ("extra", br#"{"v":"a","at":1,"load_ms":0,"id":7,"rev":9}"#),
        ("spaced", br#"{ "v" : "a" , "at" : 1 }"#),
        ("first-not-v", br#"{"at":1,"v":"a","id":7}"#),
    ];
    for (name, bytes) in written {
        let key = Key::builder().text("same:").part(name).build();
        set_raw(&mut conn, &cache.redis_key(&key), bytes).await;
        let expected: String = whole_read(bytes).expect("well formed");
        let read: Result<String, String> = cache
            .fetch(&key, &policy, async { Ok("loaded".to_owned()) })
            .await;
        assert_eq!(read.as_deref(), Ok(expected.as_str()), "{name}");
        let mut seen = None;
        let updated = cache
            .update(&key, |v: &mut String| {
                seen = Some(v.clone());
                v.push('!');
            })
            .await
            .unwrap();
        assert!(updated, "{name}");
        assert_eq!(seen.as_deref(), Some(expected.as_str()), "{name}");
        let read: Result<String, String> = cache
            .fetch(&key, &policy, async { Ok("loaded".to_owned()) })
            .await;
        assert_eq!(read, Ok(format!("{expected}!")), "{name}: after the update");
    }
    // Entries the crate writes itself in each format, updated and read back.
    for (name, policy) in [
        ("json", policy),
        (
            "msgpack",
            policy.with_codec(cached_redis::Codec::MessagePack),
        ),
        (
            "zstd",
            policy
                .with_compression(cached_redis::Compression::Zstd { above: 0 })
                .unwrap(),
        ),
    ] {
        let key = Key::builder().text("own:").part(name).build();
        let value = Account {
            id: 9,
            name: "{\"v\":1},".into(),
            tags: vec!["}".into()],
        };
        let load = |value: Account| async move { Ok::<_, String>(value) };
        assert_eq!(
            cache.fetch(&key, &policy, load(value.clone())).await,
            Ok(value.clone())
        );
        cache.settle().await;
        assert!(
            cache
                .update(&key, |a: &mut Account| a.tags.push(",".into()))
                .await
                .unwrap(),
            "{name}"
        );
        let mut changed = value.clone();
        changed.tags.push(",".into());
        let other = Account {
            id: 0,
            name: String::new(),
            tags: vec![],
        };
        assert_eq!(
            cache.fetch(&key, &policy, load(other)).await,
            Ok(changed),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Keys rendered into the per-thread spare buffers.
// ---------------------------------------------------------------------------------------------

/// An argument of a call in the storm: short, kept-size, just under and over the length at
/// which keys are hashed, with separators and multi-byte text.
fn argument(rng: &mut Rng) -> String {
    const ALPHABET: [&str; 8] = ["a", ":", "\\", "{", "}", "é", "7", "}:"];
    let len = match rng.below(5) {
        0 => rng.below(6),
        1 => 30 + rng.below(30),
        2 => 180 + rng.below(60),
        3 => MAX_KEY_LEN as u64 - 20 + rng.below(40),
        _ => 300 + rng.below(300),
    };
    (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
        .collect()
}

fn key_a(arg: &str) -> Key {
    Key::builder().text("fa:").part(arg).build()
}

fn key_b(arg: &str) -> Key {
    Key::builder()
        .text("fb:")
        .part(arg)
        .text(":")
        .part(arg)
        .build()
}

fn value_b(arg: &str) -> String {
    format!("B|{arg}")
}

fn value_a(arg: &str) -> String {
    format!("A|{arg}|{}", value_b(arg))
}

/// Polls `call` at most `polls` times (yielding between), then drops it: `None` if it was
/// cancelled so.
async fn poll_at_most<F: Future>(call: F, polls: u64) -> Option<F::Output> {
    let mut call = pin!(call);
    for _ in 0..polls {
        let polled = std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        if polled.is_some() {
            return polled;
        }
        tokio::task::yield_now().await;
    }
    None
}

/// Function B of the storm: its key is `fb:<arg>:<arg>`; its loader answers `B|<arg>`, or
/// panics for arguments whose first byte is odd when `panics` says so.
async fn call_b(cache: &Cache, arg: &str, near: bool, panics: bool) -> Result<String, String> {
    let policy = policy("fb").with_near(Duration::from_secs(30)).unwrap();
    let arg_owned = arg.to_owned();
    let loader = async move {
        tokio::task::yield_now().await;
        if panics && arg_owned.len() % 3 == 1 {
            panic!("loader of fb panics for {}", arg_owned.len());
        }
        Ok(value_b(&arg_owned))
    };
    if near {
        cache.fetch_near(&key_b(arg), &policy, loader).await
    } else {
        cache.fetch(&key_b(arg), &policy, loader).await
    }
}

/// Function A of the storm: its key is `fa:<arg>`; its loader calls function B of the same
/// argument through the same cache (a nested call on the thread, while A's key and Redis key
/// are held) and answers `A|<arg>|<B's value>`.
async fn call_a(cache: &Cache, arg: &str, near: bool) -> Result<String, String> {
    let policy = policy("fa").with_near(Duration::from_secs(30)).unwrap();
    let loader = {
        let (cache, arg) = (cache.clone(), arg.to_owned());
        async move {
            let b = Box::pin(call_b(&cache, &arg, near, false)).await?;
            Ok(format!("A|{arg}|{b}"))
        }
    };
    if near {
        cache.fetch_near(&key_a(arg), &policy, loader).await
    } else {
        cache.fetch(&key_a(arg), &policy, loader).await
    }
}

/// Many tasks on a four-thread runtime call two functions over arguments of every length
/// (hashed keys among them), with nested calls inside loaders, callers dropped after a random
/// number of polls, and panicking loaders. Every answer is its own key's value; every value
/// key Redis (or memory) holds is one of the keys called, holding that key's value; the Redis
/// key of every call is `<namespace>:{<key>}`.
async fn storm(cache: Cache, server: Option<&RedisServer>, near: bool, seed: u64) {
    let mut rng = Rng::seeded(seed);
    let args: Vec<String> = (0..60).map(|_| argument(&mut rng)).collect();
    let args = Arc::new(args);
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for task in 0..24u64 {
        let (cache, args, failures) = (cache.clone(), args.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::seeded(seed ^ (task + 1).wrapping_mul(0x9e37_79b9));
            for _ in 0..60 {
                let arg = &args[rng.below(args.len() as u64) as usize];
                let which = rng.below(4);
                let polls = if rng.below(3) == 0 {
                    1 + rng.below(6)
                } else {
                    u64::MAX
                };
                let (answer, expected) = match which {
                    0 | 1 => (
                        poll_at_most(call_a(&cache, arg, near), polls).await,
                        value_a(arg),
                    ),
                    2 => (
                        poll_at_most(call_b(&cache, arg, near, false), polls).await,
                        value_b(arg),
                    ),
                    _ => {
                        // A panicking loader, in a task of its own: the panic reaches it.
                        let (cache, owned) = (cache.clone(), arg.clone());
                        let panicking = tokio::spawn(async move {
                            poll_at_most(call_b(&cache, &owned, near, true), polls).await
                        })
                        .await;
                        match panicking {
                            Ok(answer) => (answer, value_b(arg)),
                            Err(e) if e.is_panic() => (None, String::new()),
                            Err(e) => panic!("{e}"),
                        }
                    }
                };
                if let Some(answer) = answer
                    && answer.as_deref() != Ok(expected.as_str())
                {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{} bytes: {answer:?} for {expected:?}", arg.len()));
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("no panic outside the panicking loaders");
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    assert!(failures.is_empty(), "answers for other keys: {failures:#?}");
    cache.settle().await;

    // Every key answers its own value afterwards, and its Redis key is as documented.
    for arg in args.iter() {
        for key in [key_a(arg), key_b(arg)] {
            assert_eq!(
                cache.redis_key(&key),
                format!("{}:{{{}}}", cache.namespace(), key.as_str())
            );
        }
        let rendered = format!("fa:{}", escaped(arg));
        if rendered.len() <= MAX_KEY_LEN {
            assert_eq!(key_a(arg).as_str(), rendered);
        } else {
            assert!(key_a(arg).as_str().contains("\\#"), "hashed");
        }
        assert_eq!(call_a(&cache, arg, near).await, Ok(value_a(arg)));
        assert_eq!(call_b(&cache, arg, near, false).await, Ok(value_b(arg)));
    }
    cache.settle().await;
    let Some(server) = server else {
        return;
    };
    // What Redis holds: only the keys called, each with its own value.
    let mut expected: HashMap<String, String> = HashMap::new();
    for arg in args.iter() {
        expected.insert(cache.redis_key(&key_a(arg)), value_a(arg));
        expected.insert(cache.redis_key(&key_b(arg)), value_b(arg));
    }
    let mut conn = server.conn().await;
    let stored = scan_keys(&mut conn, &format!("{}:*", cache.namespace())).await;
    let mut seen = HashSet::new();
    for redis_key in stored {
        if redis_key.ends_with(":lease") {
            continue;
        }
        let value = expected
            .get(&redis_key)
            .unwrap_or_else(|| panic!("Redis holds a key no call made: {redis_key:?}"));
        let bytes = get_raw(&mut conn, &redis_key).await.expect("present");
        assert_eq!(
            whole_read::<String>(&bytes).as_ref(),
            Some(value),
            "{redis_key:?}"
        );
        seen.insert(redis_key);
    }
    assert_eq!(seen.len(), expected.len(), "every key was stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_calls_on_four_threads_never_mixes_keys_in_redis() {
    let server = RedisServer::start();
    let cache = server.cache("adv-perf-storm").await;
    storm(cache, Some(&server), false, 0x5eed_0001).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_near_calls_never_mixes_keys() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "adv-perf-storm-near", Duration::from_secs(5)).await;
    storm(cache, Some(&server), true, 0x5eed_0002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_in_memory_calls_never_mixes_keys() {
    let cache = Cache::in_memory(10_000);
    storm(cache.clone(), None, false, 0x5eed_0003).await;
    // `Cache::ttl` renders the Redis key too: a present key says so, an absent one does not.
    let mut rng = Rng::seeded(0x5eed_0003);
    let arg = argument(&mut rng);
    assert!(cache.ttl(&key_a(&arg)).await.unwrap().is_some());
    assert_eq!(cache.ttl(&key_a("never called")).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// 3. The u64-nanosecond clock: in-memory deadlines, near deadlines, `near`, the lag.
// ---------------------------------------------------------------------------------------------

/// An in-memory entry with a 300 ms TTL and 200 ms of jitter is never served once its longest
/// possible life (from the end of the call that stored it) is over, and `Cache::ttl` never
/// reports more than that life has left, nor less than its shortest possible life has left.
/// Calls spin for 1.5 s over several keys (the expiry is what is tested: time passes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_entry_is_never_served_past_its_ttl_and_ttl_is_exact() {
    let cache = Cache::in_memory(100);
    let ttl = Duration::from_millis(300);
    let jitter = Duration::from_millis(200);
    let policy = Policy::new("adv-perf-mem-ttl", ttl)
        .unwrap()
        .with_jitter(Jitter::Fixed(jitter))
        .unwrap();
    let version = AtomicU64::new(0);
    // Per key: the value last loaded, when its load began, and when its call returned.
    let mut loaded: HashMap<u32, (u64, Instant, Instant)> = HashMap::new();
    let mut expiries = 0;
    let end = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < end {
        for id in 0..5u32 {
            let key = Key::builder().text("m:").part(&id).build();
            let began = Instant::now();
            let load_began = std::sync::Mutex::new(None);
            let answer: Result<u64, String> = cache
                .fetch(&key, &policy, async {
                    *load_began.lock().unwrap() = Some(Instant::now());
                    Ok(version.fetch_add(1, Ordering::SeqCst))
                })
                .await;
            let returned = Instant::now();
            let answer = answer.unwrap();
            if let Some(load_began) = load_began.into_inner().unwrap() {
                if loaded.contains_key(&id) {
                    expiries += 1;
                }
                loaded.insert(id, (answer, load_began, returned));
                continue;
            }
            let (value, load_began, stored_by) = loaded[&id];
            assert_eq!(answer, value, "a hit serves the last load");
            assert!(
                began < stored_by + ttl,
                "key {id}: served {:?} after the call that stored it returned (ttl {ttl:?})",
                began - stored_by
            );
            let asked = Instant::now();
            let left = cache.ttl(&key).await.unwrap();
            let answered = Instant::now();
            if let Some(left) = left {
                assert!(
                    asked + left <= stored_by + ttl,
                    "key {id}: ttl() says {left:?}, past the longest life"
                );
                // 2 ms of slack: the clock may read late by the time between its two
                // readings at construction, which only shortens what is reported.
                let shortest = (load_began + ttl - jitter - Duration::from_millis(2))
                    .saturating_duration_since(answered);
                assert!(
                    left >= shortest,
                    "key {id}: ttl() says {left:?}, under the shortest life's {shortest:?}"
                );
            }
        }
        tokio::task::yield_now().await;
    }
    assert!(expiries >= 5, "entries expired and reloaded: {expiries}");
}

/// Near copies of entries with a jittered 300 ms (+-200 ms) Redis TTL and a 60 s `near`: once
/// another connection sees the Redis entry gone, no call returns the copy's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_copy_is_never_served_after_its_jittered_redis_ttl() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "adv-perf-near-ttl", Duration::from_secs(5)).await;
    let mut conn = server.conn().await;
    let policy = Policy::new("adv-perf-near-ttl", Duration::from_millis(400))
        .unwrap()
        .with_jitter(Jitter::Fixed(Duration::from_millis(300)))
        .unwrap()
        .with_near(Duration::from_secs(60))
        .unwrap();
    let version = Arc::new(AtomicU64::new(0));
    let call = |id: u32| {
        let (cache, policy, version) = (cache.clone(), policy, version.clone());
        async move {
            let key = Key::builder().text("nt:").part(&id).build();
            let answer: Result<u64, String> = cache
                .fetch_near(&key, &policy, async move {
                    Ok(version.fetch_add(1, Ordering::SeqCst))
                })
                .await;
            answer.unwrap()
        }
    };
    for id in 0..8u32 {
        let first = call(id).await;
        cache.settle().await;
        let redis_key = cache.redis_key(&Key::builder().text("nt:").part(&id).build());
        let left = pttl(&mut conn, &redis_key).await;
        // Redis expires the entry by then at the latest (its clock reads whole milliseconds).
        let gone_by = Instant::now() + Duration::from_millis(left.max(0) as u64 + 2);
        if left <= 0 {
            continue;
        }
        loop {
            let started = Instant::now();
            let value = call(id).await;
            if value != first {
                break;
            }
            assert!(
                started <= gone_by,
                "key {id}: the old value served {:?} after its Redis entry expired",
                started - gone_by
            );
            tokio::task::yield_now().await;
        }
    }
    assert!(cache.stats().near_hits > 0, "copies were kept and served");
}

/// With a 150 ms `near` and a 60 s Redis TTL, no near hit is served once `near` has passed
/// since the end of the call that kept the copy (the last call that asked Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_copy_is_never_served_after_near_elapsed() {
    let server = RedisServer::start();
    let cache = near_cache(&server.url(), "adv-perf-near-keep", Duration::from_secs(5)).await;
    let near = Duration::from_millis(150);
    let policy = policy("adv-perf-near-keep").with_near(near).unwrap();
    let key = Key::raw("keep:1");
    let call = || async {
        let answer: Result<u64, String> = cache.fetch_near(&key, &policy, async { Ok(1) }).await;
        assert_eq!(answer, Ok(1));
    };
    until_near_hit(&cache, call).await;
    let mut kept_by: Option<Instant> = None;
    let (mut near_hits, mut redis_reads) = (0, 0);
    let end = Instant::now() + Duration::from_millis(1_000);
    while Instant::now() < end {
        let before = cache.stats().near_hits;
        let started = Instant::now();
        call().await;
        let returned = Instant::now();
        if cache.stats().near_hits > before {
            near_hits += 1;
            if let Some(kept_by) = kept_by {
                assert!(
                    started < kept_by + near,
                    "a near hit {:?} after the copy was kept (near {near:?})",
                    started - kept_by
                );
            }
        } else {
            redis_reads += 1;
            kept_by = Some(returned);
        }
        tokio::task::yield_now().await;
    }
    assert!(
        near_hits > 0 && redis_reads >= 3,
        "{near_hits} / {redis_reads}"
    );
}

/// With the tracking connection black-holed (its replies and invalidations held by a proxy)
/// and a 100 ms lag, five warm keys are overwritten from another connection: no call that
/// starts more than the lag after the overwrites returns a key's old value (the guarantee:
/// never later than `near_max_lag` after the invalidation was sent). The tracker's held PING
/// times out and its session is made again on a fresh connection, so near hits of the new
/// values may come back: only the old values are stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_near_hit_past_the_lag_after_the_tracker_goes_silent() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let lag = Duration::from_millis(100);
    let cache = near_cache(&proxy.url(), "adv-perf-lag", lag).await;
    let policy = policy("adv-perf-lag")
        .with_near(Duration::from_secs(30))
        .unwrap();
    let key = |id: u32| Key::builder().text("lag:").part(&id).build();
    let call = |id: u32| {
        let cache = cache.clone();
        async move {
            let answer: Result<u32, String> = cache
                .fetch_near(&key(id), &policy, async move { Ok(id) })
                .await;
            answer.unwrap()
        }
    };
    for id in 0..5 {
        until_near_hit(&cache, || async move { assert_eq!(call(id).await, id) }).await;
    }
    let mut admin = server.conn().await;
    let tracking = |fields: &[&str]| {
        fields
            .iter()
            .any(|f| f.starts_with("flags=") && f.contains('t'))
    };
    let tracker = proxy
        .connection_of_client(&mut admin, tracking)
        .await
        .expect("the tracking connection goes through the proxy");
    proxy.hold_replies(tracker);
    for id in 0..5 {
        let new = format!(r#"{{"v":{},"at":1,"load_ms":0,"id":1}}"#, id + 1_000);
        set_raw(&mut admin, &cache.redis_key(&key(id)), new.as_bytes()).await;
    }
    let written = Instant::now();
    let mut stale_before = 0;
    let mut fresh = HashSet::new();
    while fresh.len() < 5 || Instant::now() < written + 3 * lag {
        for id in 0..5 {
            let started = Instant::now();
            let value = call(id).await;
            if value == id {
                assert!(
                    started <= written + lag,
                    "key {id}: the old value served {:?} after it was overwritten (lag {lag:?})",
                    started - written
                );
                stale_before += 1;
            } else {
                assert_eq!(value, id + 1_000);
                fresh.insert(id);
            }
        }
        tokio::task::yield_now().await;
    }
    eprintln!("{stale_before} calls served the old value within the lag");
    proxy.release_replies(tracker);
}

/// An in-memory `update` keeps the entry's deadline: `Cache::ttl` does not grow, and the
/// updated value is not served past the deadline the load set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_update_keeps_the_deadline_the_load_set() {
    let cache = Cache::in_memory(10);
    let ttl = Duration::from_millis(300);
    let policy = Policy::new("adv-perf-mem-update", ttl).unwrap();
    let key = Key::raw("upd:1");
    let loads = AtomicU64::new(0);
    let load = || async { Ok::<_, String>(loads.fetch_add(1, Ordering::SeqCst) * 100) };
    assert_eq!(cache.fetch(&key, &policy, load()).await, Ok(0));
    let stored_by = Instant::now();
    let first = cache.ttl(&key).await.unwrap().expect("cached");
    assert!(first <= ttl);
    assert!(cache.update(&key, |v: &mut u64| *v += 1).await.unwrap());
    let second = cache.ttl(&key).await.unwrap().expect("still cached");
    assert!(second <= first, "{second:?} after {first:?}");
    assert_eq!(
        cache.fetch(&key, &policy, load()).await,
        Ok(1),
        "the update"
    );
    loop {
        let started = Instant::now();
        let answer = cache.fetch(&key, &policy, load()).await.unwrap();
        if answer == 100 {
            break;
        }
        assert_eq!(answer, 1);
        assert!(
            started < stored_by + ttl,
            "the updated value served {:?} past the load's deadline",
            started - (stored_by + ttl)
        );
        tokio::task::yield_now().await;
    }
}
