// A syntax error in the body is reported where it is, not as "not an async fn".
use cached_redis::redis_cached;

#[redis_cached(key = "user:<id>", ttl = "60s")]
async fn get_user(id: u64) -> Result<u64, String> {
    let doubled = id * ;
    Ok(doubled)
}

fn main() {}
