// Durations and jitter are strings with a unit; a bare number is refused with what to write.
use cached_redis::redis_cached;

#[redis_cached(key = "a:<id>", ttl = 60, jitter = 10, none_ttl = 5)]
async fn numbers(id: u64) -> Option<u64> {
    Some(id)
}

// An expression is a `ttl` computed once; it must be a `Duration`, and only `ttl` may be one.
const TTL: u64 = 60;

#[redis_cached(key = "b:<id>", ttl = TTL)]
async fn constant(id: u64) -> Option<u64> {
    Some(id)
}

#[redis_cached(key = "c:<id>", ttl = "60s", lock_ttl = LEASE)]
async fn lease(id: u64) -> Option<u64> {
    Some(id)
}

const LEASE: std::time::Duration = std::time::Duration::from_secs(5);

fn main() {}
