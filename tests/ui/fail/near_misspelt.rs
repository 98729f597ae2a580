// `near` takes a duration or "off": anything else is reported at the literal, naming both.
use cached_redis::redis_cached;

#[redis_cached(key = "flags", ttl = "60s", near = "of")]
async fn flags() -> Result<Vec<String>, String> {
    Ok(vec![])
}

fn main() {}
