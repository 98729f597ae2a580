use cached_redis::redis_cached;

#[redis_cached(key = "a:<id>", ttl = "60s", background = false)]
async fn background_without_a_refresh(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "b:<id>", ttl = "60s", stale = "5m", cache_if = |v: &u64| *v > 0, background = true)]
async fn background_with_cache_if(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
