// Durations and jitter are strings with a unit; a bare number is refused with what to write.
use cached_redis::redis_cached;

#[redis_cached(key = "a:<id>", ttl = 60, jitter = 10, none_ttl = 5)]
async fn numbers(id: u64) -> Option<u64> {
    Some(id)
}

const TTL: u64 = 60;

#[redis_cached(key = "b:<id>", ttl = TTL)]
async fn constant(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
