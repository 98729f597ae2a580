use cached_redis::redis_cached;

#[redis_cached(key = "a:<id>", ttl = "60s", fail_safe = "1h")]
async fn not_a_result(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
