use cached_redis::redis_cached;

// Every bad argument is reported, not just the first.
#[redis_cached(key = "user:<nope>", ttl = "soon", jitter = "200%", colour = "blue")]
async fn get_user(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
