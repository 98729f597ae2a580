use cached_redis::redis_cached;

#[redis_cached(key = "cfg:<self.name>", ttl = "60s")]
async fn config(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
