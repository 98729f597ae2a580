use cached_redis::redis_cached;

#[redis_cached(key = "a:<id>", ttl = "60s", batch)]
async fn batch_returning_a_list(ids: &[u64]) -> Result<Vec<String>, String> {
    Ok(ids.iter().map(|id| id.to_string()).collect())
}

fn main() {}
