use cached_redis::{Cache, redis_cached};

// The cache is chosen by the key's `id`: no one cache holds every entry.
#[redis_cached(key = "user:<id>", ttl = "60s", cache = &shards[id as usize % 2])]
async fn user(shards: &[Cache], id: u64) -> Result<u64, String> {
    Ok(id)
}

struct Repo {
    shards: Vec<Cache>,
    shard: usize,
}

impl Repo {
    #[redis_cached(key = "item:<self.shard>:<id>", ttl = "60s", cache = &self.shards[self.shard])]
    async fn item(&self, id: u64) -> Result<u64, String> {
        Ok(id)
    }
}

async fn writes(shards: &[Cache], repo: &Repo) {
    let _ = invalidate_all_user(shards).await;
    let _ = repo.invalidate_all_item().await;
}

fn main() {
    let _ = writes;
}
