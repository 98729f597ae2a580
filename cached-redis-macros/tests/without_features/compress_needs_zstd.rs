use cached_redis::redis_cached;

#[redis_cached(key = "report:<id>", ttl = "60s", compress_above = "16KiB")]
async fn report(id: u64) -> Result<Vec<u64>, String> {
    Ok(vec![id])
}

// Turning compression off needs no feature.
#[redis_cached(key = "small:<id>", ttl = "60s", compress_above = "never", codec = "msgpack")]
async fn small(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {
    let _ = (report(1), small(1));
}
