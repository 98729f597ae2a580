// A function ported from the `cached` crate keeps its arguments at first: each unknown one
// says what to write here instead.
use cached_redis::redis_cached;

#[redis_cached(key = "user:<id>", ttl_secs = 60, convert = r#"{ format!("{}", id) }"#, map_error = r#"|e| e"#)]
async fn get_user(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "n:<id>", ttl = "60s", result = true, sync_writes = true)]
async fn get_n(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
