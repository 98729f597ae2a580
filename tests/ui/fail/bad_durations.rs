use cached_redis::redis_cached;

#[redis_cached(key = "a:<id>", ttl = "60")]
async fn no_unit(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "b:<id>", ttl = "1.5s")]
async fn fractional(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "c:<id>", ttl = "0s")]
async fn zero(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "d:<id>", ttl = "60s", lock_ttl = "5 seconds")]
async fn bad_lock_ttl(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "e:<id>", ttl = "60s", max_load = "soon")]
async fn bad_max_load(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "f:<id>", ttl = "60s", lock_ttl = "2d")]
async fn lease_over_a_day(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "g:<id>", ttl = "60s", near = "0ms")]
async fn near_zero(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "h:<id>", ttl = "60s", near = "2d")]
async fn near_over_a_day(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
