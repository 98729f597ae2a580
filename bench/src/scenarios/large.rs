//! Scenario 9: hits of ~1 MB values in each codec: the `cached` crate (compact MessagePack)
//! against cached-redis in JSON, in MessagePack, and in MessagePack compressed with zstd, on
//! two shapes of value: the matrix's one long repeated-character string, and 1 MB of rows as a
//! service caches them (ids, prices, short text, tags).

// `cached`'s `create` block names it.
use std::time::Duration;

use cached::AsyncRedisCache;
use cached::macros::concurrent_cached;
use cached_redis::redis_cached;
use serde::{Deserialize, Serialize};

use crate::report::{Spread, Table, ratio};
use crate::systems::{self, BenchError, Payload, clients};

use super::{Config, ops_per_second};

/// One row of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Row {
    id: u64,
    sku: String,
    name: String,
    price_cents: u64,
    stock: i32,
    rating: f32,
    tags: Vec<String>,
    updated_at: u64,
}

/// A large value of either shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Large {
    Padded(Payload),
    Rows(Vec<Row>),
}

const WORDS: [&str; 24] = [
    "steel", "oak", "linen", "blue", "compact", "large", "kit", "lamp", "chair", "desk", "mug",
    "cable", "set", "pro", "mini", "classic", "matte", "gloss", "travel", "home", "garden",
    "office", "kids", "eco",
];

/// About `size` bytes of JSON rows, the same for every call with the same `id`.
fn rows(id: u64, size: usize) -> Vec<Row> {
    let mut state = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut word = || WORDS[(next() % WORDS.len() as u64) as usize];
    let mut out = Vec::new();
    let mut bytes = 0;
    while bytes < size {
        let n = out.len() as u64;
        let row = Row {
            id: id * 1_000_000 + n,
            sku: format!("SKU-{:08X}", n * 7919 + id),
            name: format!("{} {} {}", word(), word(), word()),
            price_cents: 199 + (n * 37) % 100_000,
            stock: (n % 250) as i32,
            rating: (n % 50) as f32 / 10.0,
            tags: vec![word().to_owned(), word().to_owned()],
            updated_at: 1_767_000_000_000 + n * 1_000,
        };
        bytes += serde_json::to_vec(&row).map_or(0, |v| v.len()) + 1;
        out.push(row);
    }
    out
}

const SIZE: usize = 1_000_000;

fn large(shape: u8, id: u64) -> Result<Large, BenchError> {
    Ok(match shape {
        0 => Large::Padded(systems::payload(id, SIZE)),
        _ => Large::Rows(rows(id, SIZE)),
    })
}

#[concurrent_cached(
    map_error = r##"|e| BenchError(format!("{e:?}"))"##,
    ty = "AsyncRedisCache<String, Large>",
    create = r##"{
        AsyncRedisCache::builder("bench-cached-large")
            .ttl(Duration::from_secs(600))
            .connection_string(&systems::url())
            .connection_manager(true)
            .build()
            .await
            .expect("cached's redis store")
    }"##,
    convert = r##"{ format!("{shape}:{id}") }"##
)]
async fn cached_large(shape: u8, id: u64) -> Result<Large, BenchError> {
    large(shape, id)
}

#[redis_cached(key = "large-json:<shape>:<id>", ttl = "10m", cache = &clients().cache, codec = "json")]
async fn json_large(shape: u8, id: u64) -> Result<Large, BenchError> {
    large(shape, id)
}

#[redis_cached(key = "large-msgpack:<shape>:<id>", ttl = "10m", cache = &clients().cache, codec = "msgpack")]
async fn msgpack_large(shape: u8, id: u64) -> Result<Large, BenchError> {
    large(shape, id)
}

#[redis_cached(
    key = "large-zstd:<shape>:<id>",
    ttl = "10m",
    cache = &clients().cache,
    codec = "msgpack",
    compress_above = "16KiB"
)]
async fn zstd_large(shape: u8, id: u64) -> Result<Large, BenchError> {
    large(shape, id)
}

/// The systems compared here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Cached,
    Json,
    MessagePack,
    Zstd,
}

const VARIANTS: [Variant; 4] = [
    Variant::Cached,
    Variant::Json,
    Variant::MessagePack,
    Variant::Zstd,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Cached => "cached (MessagePack)",
            Variant::Json => "cached-redis, JSON",
            Variant::MessagePack => "cached-redis, `codec = \"msgpack\"`",
            Variant::Zstd => "cached-redis, msgpack + `compress_above = \"16KiB\"`",
        }
    }

    async fn get(self, shape: u8, id: u64) -> Large {
        let value = match self {
            Variant::Cached => cached_large(shape, id).await,
            Variant::Json => json_large(shape, id).await,
            Variant::MessagePack => msgpack_large(shape, id).await,
            Variant::Zstd => zstd_large(shape, id).await,
        };
        value.expect("a hit")
    }

    /// The stored bytes of `(shape, 0)`.
    async fn stored(self, conn: &mut redis::aio::MultiplexedConnection, shape: u8) -> u64 {
        let cache = &clients().cache;
        let key = match self {
            Variant::Cached => return cached_stored(conn, shape).await,
            Variant::Json => cache.redis_key(&json_large_key(shape, 0)),
            Variant::MessagePack => cache.redis_key(&msgpack_large_key(shape, 0)),
            Variant::Zstd => cache.redis_key(&zstd_large_key(shape, 0)),
        };
        strlen(conn, &key).await
    }
}

async fn strlen(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("STRLEN")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap_or(0)
}

/// `cached` names its keys `<namespace>:<prefix>:<key>`, with `:` in a field written `%3A`:
/// found by their ending.
async fn cached_stored(conn: &mut redis::aio::MultiplexedConnection, shape: u8) -> u64 {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*bench-cached-large*")
        .query_async(conn)
        .await
        .unwrap_or_default();
    let ending = format!(":{shape}%3A0");
    match keys.iter().find(|k| k.ends_with(&ending)) {
        Some(key) => strlen(conn, key).await,
        None => 0,
    }
}

const TASKS: [usize; 3] = [1, 8, 64];

/// Scenario 9: ops/s of 1 MB hits by codec, with the bytes each stores.
pub(super) async fn large_values(cfg: &Config) -> Table {
    let mut admin = redis::Client::open(cfg.url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    let secs = (cfg.secs / 2.0).max(0.2);
    let rounds = cfg.rounds.min(3);
    let mut table = Table::new(
        "9. Large values (~1 MB of JSON): codecs and compression (hit ops/s)",
        &[
            "value",
            "system",
            "stored KB",
            "1 task",
            "8 tasks",
            "64 tasks",
            "8 tasks vs cached",
        ],
    );
    for (shape, label) in [(0, "one repeated-character string"), (1, "rows")] {
        let mut cells: Vec<[Vec<f64>; TASKS.len()]> = vec![Default::default(); VARIANTS.len()];
        for variant in VARIANTS {
            for id in 0..16 {
                assert_eq!(
                    variant.get(shape, id).await,
                    large(shape, id).expect("value")
                );
            }
        }
        for round in 0..rounds {
            for (t, tasks) in TASKS.into_iter().enumerate() {
                let mut order = VARIANTS.to_vec();
                order.rotate_left(round % VARIANTS.len());
                for variant in order {
                    let rate = ops_per_second(tasks, secs, move |id| async move {
                        variant.get(shape, id).await;
                    })
                    .await;
                    cells[variant as usize][t].push(rate);
                }
            }
        }
        let baseline = Spread::of(&cells[Variant::Cached as usize][1]).median;
        for variant in VARIANTS {
            let stored = variant.stored(&mut admin, shape).await;
            let mut row = vec![label.to_owned(), variant.name().to_owned()];
            row.push(format!("{:.0}", stored as f64 / 1000.0));
            for samples in &cells[variant as usize] {
                row.push(Spread::of(samples).show(0));
            }
            let ours = Spread::of(&cells[variant as usize][1]).median;
            row.push(ratio(ours, baseline));
            table.rows.push(row);
        }
    }
    table.note = format!(
        "Medians of {rounds} rounds of {secs:.1} s per cell, over 16 warm keys per system; every value is checked equal to its load once before timing. \"rows\" is {} rows of ids, prices, three-word names and tags; the string is the matrix's 1 MB payload, which compresses to almost nothing.",
        rows(0, SIZE).len()
    );
    table
}
