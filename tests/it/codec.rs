//! Codecs and compression: what a function's `codec` and `compress_above` (and the cache's
//! `codec` and `compression`) write to Redis, and that every process reads every format, so a
//! changed setting never turns stored entries into misses.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cached_redis::{Cache, Codec, Compression, Policy, redis_cached};
use cached_redis_tests::{RedisServer, assert_no_state_left, get_raw};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    id: u32,
    lines: Vec<String>,
}

/// A report of `lines` lines of text (about 40 bytes each, compressible as text is).
fn report(id: u32, lines: usize) -> Report {
    Report {
        id,
        lines: (0..lines)
            .map(|i| format!("line {i} of report {id}: total {}", i * 7))
            .collect(),
    }
}

#[redis_cached(key = "json:<id>", ttl = "60s", cache = cache, skip = "loads, lines")]
async fn as_json(
    cache: &Cache,
    loads: &AtomicU32,
    id: u32,
    lines: usize,
) -> Result<Report, String> {
    loads.fetch_add(1, Ordering::SeqCst);
    Ok(report(id, lines))
}

#[redis_cached(key = "msgpack:<id>", ttl = "60s", codec = "msgpack", cache = cache, skip = "loads")]
async fn as_msgpack(cache: &Cache, loads: &AtomicU32, id: u32) -> Result<Report, String> {
    loads.fetch_add(1, Ordering::SeqCst);
    Ok(report(id, 3))
}

#[redis_cached(key = "forced-json:<id>", ttl = "60s", codec = "json", compress_above = "never", cache = cache)]
async fn forced_json(cache: &Cache, id: u32) -> Result<Report, String> {
    Ok(report(id, 200))
}

#[redis_cached(key = "zstd:<id>", ttl = "60s", compress_above = "1KiB", cache = cache, skip = "loads, lines")]
async fn compressed(
    cache: &Cache,
    loads: &AtomicU32,
    id: u32,
    lines: usize,
) -> Result<Report, String> {
    loads.fetch_add(1, Ordering::SeqCst);
    Ok(report(id, lines))
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

async fn stored(server: &RedisServer, cache: &Cache, key: &cached_redis::Key) -> Vec<u8> {
    cache.settle().await;
    let mut conn = server.conn().await;
    get_raw(&mut conn, &cache.redis_key(key))
        .await
        .expect("an entry is stored")
}

fn is_msgpack_map(bytes: &[u8]) -> bool {
    matches!(bytes[0], 0x80..=0x8f | 0xde | 0xdf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_codec_writes_message_pack_and_reads_it_back() {
    let server = RedisServer::start();
    let cache = server.cache("codec-fn").await;
    let loads = AtomicU32::new(0);
    assert_eq!(as_msgpack(&cache, &loads, 1).await.unwrap(), report(1, 3));
    let bytes = stored(&server, &cache, &as_msgpack_key(1)).await;
    assert!(
        is_msgpack_map(&bytes),
        "a MessagePack map: {:#04x}",
        bytes[0]
    );
    assert!(!bytes.starts_with(b"{"));
    assert_eq!(as_msgpack(&cache, &loads, 1).await.unwrap(), report(1, 3));
    assert_eq!(loads.load(Ordering::SeqCst), 1, "the second call hit");
    assert_eq!(cache.stats().decode_errors, 0);

    assert_eq!(as_json(&cache, &loads, 1, 3).await.unwrap(), report(1, 3));
    let bytes = stored(&server, &cache, &as_json_key(1)).await;
    assert!(
        bytes.starts_with(br#"{"v":{"id":1,"lines":["#),
        "JSON stays the default"
    );
    assert_no_state_left(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_codecs_keeps_the_stored_entries_readable() {
    let server = RedisServer::start();
    let cache = server.cache("codec-switch").await;
    let json = Policy::new("switch", Duration::from_secs(60)).unwrap();
    let msgpack = json.with_codec(Codec::MessagePack);
    let zstd = msgpack
        .with_compression(Compression::Zstd { above: 0 })
        .unwrap();
    let plain = json.with_compression(Compression::None).unwrap();
    let loads = AtomicU32::new(0);
    let loads = &loads;
    let load = |id: u32| async move {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok::<_, String>(report(id, 5))
    };
    let switches = [
        (json, msgpack, 1),
        (msgpack, json, 2),
        (zstd, plain, 3),
        (plain, zstd, 4),
    ];
    for (written, read, id) in switches {
        let key = cached_redis::Key::builder()
            .text("switch:")
            .part(&id)
            .build();
        cache.fetch(&key, &written, load(id)).await.unwrap();
        let value = cache.fetch(&key, &read, load(id)).await.unwrap();
        assert_eq!(value, report(id, 5));
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        4,
        "each entry loaded once, then hit"
    );
    assert_eq!(cache.stats().decode_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_codec_applies_unless_a_function_says_otherwise() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder("codec-cache")
        .codec(Codec::MessagePack)
        .compression(Compression::Zstd { above: 64 })
        .build()
        .await
        .unwrap();
    let loads = AtomicU32::new(0);
    as_json(&cache, &loads, 2, 20).await.unwrap();
    let bytes = stored(&server, &cache, &as_json_key(2)).await;
    assert!(
        bytes.starts_with(&ZSTD_MAGIC),
        "the cache's codec and compression"
    );
    forced_json(&cache, 2).await.unwrap();
    let bytes = stored(&server, &cache, &forced_json_key(2)).await;
    assert!(
        bytes.starts_with(b"{") && bytes.len() > 4096,
        "`codec = \"json\"` and `compress_above = \"never\"` override the cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_the_threshold_are_stored_compressed() {
    let server = RedisServer::start();
    let cache = server.cache("codec-zstd").await;
    let loads = AtomicU32::new(0);
    // 2,000 lines: about 80 KB of JSON.
    let large = compressed(&cache, &loads, 1, 2000).await.unwrap();
    assert_eq!(large, report(1, 2000));
    let json_len = serde_json::to_vec(&large).unwrap().len();
    let bytes = stored(&server, &cache, &compressed_key(1)).await;
    assert!(bytes.starts_with(&ZSTD_MAGIC), "a zstd frame");
    assert!(
        bytes.len() * 4 < json_len,
        "{} bytes stored for {json_len} bytes of JSON",
        bytes.len()
    );
    assert_eq!(compressed(&cache, &loads, 1, 2000).await.unwrap(), large);
    assert_eq!(loads.load(Ordering::SeqCst), 1, "a hit decompresses");

    // Under the threshold: stored as encoded.
    compressed(&cache, &loads, 2, 1).await.unwrap();
    let bytes = stored(&server, &cache, &compressed_key(2)).await;
    assert!(bytes.starts_with(b"{"), "{:?}", &bytes[..4]);
    assert_eq!(cache.stats().decode_errors, 0);
    assert_no_state_left(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_keeps_a_compressed_or_message_pack_entry_so() {
    let server = RedisServer::start();
    let cache = server.cache("codec-update").await;
    let loads = AtomicU32::new(0);
    compressed(&cache, &loads, 3, 2000).await.unwrap();
    as_msgpack(&cache, &loads, 3).await.unwrap();
    let changed = update_compressed(&cache, 3, |r| r.lines[0] = "changed".into())
        .await
        .unwrap();
    assert!(changed);
    let changed = update_as_msgpack(&cache, 3, |r| r.id = 33).await.unwrap();
    assert!(changed);
    let zstd = stored(&server, &cache, &compressed_key(3)).await;
    assert!(zstd.starts_with(&ZSTD_MAGIC), "still compressed");
    let msgpack = stored(&server, &cache, &as_msgpack_key(3)).await;
    assert!(is_msgpack_map(&msgpack), "still MessagePack");
    assert_eq!(
        compressed(&cache, &loads, 3, 2000).await.unwrap().lines[0],
        "changed"
    );
    assert_eq!(as_msgpack(&cache, &loads, 3).await.unwrap().id, 33);
    assert_eq!(loads.load(Ordering::SeqCst), 2, "both read from the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_writes_its_functions_format_and_cache_update_the_one_found() {
    let server = RedisServer::start();
    let cache = server.cache("codec-update-format").await;
    let loads = AtomicU32::new(0);
    // Written as JSON, as an older build (or another setting) would have.
    let json = Policy::new("as_msgpack", Duration::from_secs(60)).unwrap();
    let key = as_msgpack_key(5);
    let load = async { Ok::<_, String>(report(5, 3)) };
    cache.fetch(&key, &json, load).await.unwrap();
    assert!(stored(&server, &cache, &key).await.starts_with(b"{"));
    assert!(
        cache
            .update(&key, |r: &mut Report| r.id = 50)
            .await
            .unwrap()
    );
    assert!(
        stored(&server, &cache, &key).await.starts_with(b"{"),
        "Cache::update has no policy: the format found"
    );
    assert!(update_as_msgpack(&cache, 5, |r| r.id = 55).await.unwrap());
    let bytes = stored(&server, &cache, &key).await;
    assert!(
        is_msgpack_map(&bytes),
        "update_<fn> writes its function's codec"
    );
    assert_eq!(as_msgpack(&cache, &loads, 5).await.unwrap().id, 55);
    assert_eq!(loads.load(Ordering::SeqCst), 0);
    // And its compression: a large entry stored plain is compressed by the update.
    let big = compressed_key(6);
    let load = async { Ok::<_, String>(report(6, 2000)) };
    cache.fetch(&big, &json, load).await.unwrap();
    assert!(stored(&server, &cache, &big).await.starts_with(b"{"));
    assert!(update_compressed(&cache, 6, |r| r.id = 66).await.unwrap());
    assert!(stored(&server, &cache, &big).await.starts_with(&ZSTD_MAGIC));
}

static NAN_LOADS: AtomicU32 = AtomicU32::new(0);

/// A NaN inside a value: JSON writes it as `null`, which does not decode as a float, so the
/// entry reloads on every call; MessagePack keeps it.
#[redis_cached(key = "samples:<id>", ttl = "60s", cache = cache)]
async fn samples_json(cache: &Cache, id: u32) -> Result<Vec<f64>, String> {
    NAN_LOADS.fetch_add(1, Ordering::SeqCst);
    Ok(vec![f64::from(id), f64::NAN])
}

#[redis_cached(key = "samples-mp:<id>", ttl = "60s", cache = cache, codec = "msgpack")]
async fn samples_msgpack(cache: &Cache, id: u32) -> Result<Vec<f64>, String> {
    NAN_LOADS.fetch_add(1, Ordering::SeqCst);
    Ok(vec![f64::from(id), f64::NAN])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nan_inside_a_value_reloads_under_json_and_hits_under_message_pack() {
    let server = RedisServer::start();
    let cache = server.cache("codec-nan").await;
    let before = NAN_LOADS.load(Ordering::SeqCst);
    for _ in 0..2 {
        assert!(samples_json(&cache, 1).await.unwrap()[1].is_nan());
    }
    assert_eq!(
        NAN_LOADS.load(Ordering::SeqCst) - before,
        2,
        "JSON: each call loads"
    );
    assert_eq!(cache.stats().decode_errors, 1);
    let before = NAN_LOADS.load(Ordering::SeqCst);
    for _ in 0..2 {
        assert!(samples_msgpack(&cache, 1).await.unwrap()[1].is_nan());
    }
    assert_eq!(
        NAN_LOADS.load(Ordering::SeqCst) - before,
        1,
        "MessagePack: a hit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_frame_is_reloaded_and_replaced() {
    let server = RedisServer::start();
    let cache = server.cache("codec-corrupt").await;
    let loads = AtomicU32::new(0);
    let mut conn = server.conn().await;
    let redis_key = cache.redis_key(&compressed_key(4));
    let mut broken = ZSTD_MAGIC.to_vec();
    broken.extend_from_slice(b"not a frame");
    let _: () = redis::cmd("SET")
        .arg(&redis_key)
        .arg(&broken)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        compressed(&cache, &loads, 4, 2000).await.unwrap(),
        report(4, 2000)
    );
    assert_eq!(cache.stats().decode_errors, 1);
    let bytes = stored(&server, &cache, &compressed_key(4)).await;
    assert!(
        bytes.starts_with(&ZSTD_MAGIC) && bytes != broken,
        "replaced"
    );
    assert_eq!(
        compressed(&cache, &loads, 4, 2000).await.unwrap(),
        report(4, 2000)
    );
}
