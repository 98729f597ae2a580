use cached_redis::redis_cached;

#[redis_cached(key = "user:<user_id>", ttl = "60s")]
async fn get_user(id: u64, region: &str) -> Result<u64, String> {
    let _ = region;
    Ok(id)
}

fn main() {}
