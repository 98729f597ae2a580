use cached_redis::redis_cached;

#[redis_cached(key = "config", ttl = "60s")]
struct Config {
    name: String,
}

#[redis_cached(crate::key = "user:<id>", ttl = "60s")]
async fn get_user(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
