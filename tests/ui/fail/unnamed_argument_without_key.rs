use cached_redis::redis_cached;

#[redis_cached(ttl = "60s")]
async fn area((w, h): (u32, u32)) -> u32 {
    w * h
}

fn main() {}
