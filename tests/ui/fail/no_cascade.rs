// An attribute with an error reports that error only: the helpers it would generate still
// exist (with stub bodies), so their callers add no "cannot find function" errors.
use cached_redis::redis_cached;

#[redis_cached(key = "user:<id>", ttl = "60 seconds")]
async fn get_user(id: u64) -> Result<u64, String> {
    Ok(id)
}

async fn rename(id: u64) -> Result<(), cached_redis::Error> {
    invalidate_get_user(id).await?;
    let _key: cached_redis::Key = get_user_key(id);
    Ok(())
}

fn main() {
    let _ = rename(1);
}
