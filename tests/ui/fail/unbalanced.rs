use cached_redis::redis_cached;

#[redis_cached(key = "user:<id", ttl = "60s")]
async fn open(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "user:id>", ttl = "60s")]
async fn close(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
