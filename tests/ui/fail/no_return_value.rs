use cached_redis::redis_cached;

#[redis_cached(key = "touch:<id>", ttl = "60s")]
async fn touch(id: u64) {
    let _ = id;
}

#[redis_cached(key = "opaque:<id>", ttl = "60s")]
async fn opaque(id: u64) -> impl serde::Serialize {
    id
}

fn main() {}
