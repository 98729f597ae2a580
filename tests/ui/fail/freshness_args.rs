use cached_redis::redis_cached;

#[redis_cached(key = "a:<id>", ttl = "60s", beta = 2.0)]
async fn beta_without_refresh(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "b:<id>", ttl = "60s", refresh = "late")]
async fn unknown_refresh(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "c:<id>", ttl = "60s", refresh = "early", beta = 0.0)]
async fn beta_out_of_range(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "d:<id>", ttl = "60s", refresh = "early", beta = "high")]
async fn beta_not_a_number(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "e:<id>", ttl = "60s", stale = "soon")]
async fn stale_unparsable(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "f:<id>", ttl = "60s", stale = "0s")]
async fn stale_zero(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "g:<id>", ttl = "60s", stale = "200000000000d")]
async fn stale_over_a_day(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "h:<id>", ttl = "60s", fail_safe = "0s")]
async fn fail_safe_zero(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "i:<id>", ttl = "60s", fail_safe = "2d")]
async fn fail_safe_over_a_day(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "j:<id>", ttl = "60s", back_off = "5s")]
async fn back_off_without_fail_safe(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "k:<id>", ttl = "60s", fail_safe = "1h", back_off = "0s")]
async fn back_off_zero(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
