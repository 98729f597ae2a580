use cached_redis::redis_cached;

struct Filter {
    min: f64,
}

#[redis_cached(key = "search:<filter>", ttl = "60s")]
async fn search(filter: Filter) -> Result<Vec<u64>, String> {
    let _ = filter.min;
    Ok(vec![])
}

fn main() {}
