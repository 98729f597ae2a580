// `none_ttl` on a function that never returns `None`: reported at the `none_ttl` literal.
use cached_redis::redis_cached;

#[redis_cached(key = "user:<id>", ttl = "60s", none_ttl = "5s")]
async fn get_user(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
