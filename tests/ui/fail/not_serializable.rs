use cached_redis::redis_cached;

struct User {
    id: u64,
}

#[redis_cached(key = "user:<id>", ttl = "60s")]
async fn get_user(id: u64) -> Result<User, String> {
    Ok(User { id })
}

fn main() {}
