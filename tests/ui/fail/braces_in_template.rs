use cached_redis::redis_cached;

#[redis_cached(key = "{user}:<id>", ttl = "60s")]
async fn get_user(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
