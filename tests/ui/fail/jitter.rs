use cached_redis::redis_cached;

#[redis_cached(key = "a:<id>", ttl = "60s", jitter = "100%")]
async fn whole_ttl(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "b:<id>", ttl = "60s", jitter = "60s")]
async fn as_long_as_ttl(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "c:<id>", ttl = "60s", jitter = "ten percent")]
async fn unparsable(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
