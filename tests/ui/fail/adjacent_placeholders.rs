use cached_redis::redis_cached;

#[redis_cached(key = "range:<from>-<to>", ttl = "60s")]
async fn range(from: u32, to: u32) -> Result<u32, String> {
    Ok(to - from)
}

fn main() {}
