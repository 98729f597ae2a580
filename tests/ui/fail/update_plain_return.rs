// `update_*` needs a `Result` or an `Option` to find the value to change in; for any other
// return type the error is where it is called, and says what to use instead. The function
// itself, and its other helpers, compile.
use cached_redis::redis_cached;

#[redis_cached(key = "count:<id>", ttl = "60s")]
async fn count(id: u64) -> u64 {
    id
}

async fn write(id: u64) -> Result<bool, cached_redis::Error> {
    invalidate_count(id).await?;
    update_count(id, |n| *n += 1).await
}

fn main() {
    let _ = (count(1), write(1));
}
