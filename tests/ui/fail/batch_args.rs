use std::collections::HashMap;

use cached_redis::redis_cached;

#[redis_cached(key = "a:<id>", ttl = "60s", batch)]
async fn batch_without_ids(id: u64) -> Result<HashMap<u64, String>, String> {
    Ok(HashMap::from([(id, String::new())]))
}

#[redis_cached(key = "b:<ids>", ttl = "60s", batch)]
async fn batch_key_names_the_collection(ids: &[u64]) -> Result<HashMap<u64, String>, String> {
    Ok(ids.iter().map(|id| (*id, String::new())).collect())
}

#[redis_cached(key = "c:<tenant>", ttl = "60s", batch)]
async fn batch_key_without_an_id(tenant: &str, ids: &[u64]) -> Result<HashMap<u64, String>, String> {
    Ok(ids.iter().map(|id| (*id, tenant.to_owned())).collect())
}

#[redis_cached(key = "d:<id>:<other>", ttl = "60s", batch)]
async fn batch_key_with_two_ids(ids: &[u64]) -> Result<HashMap<u64, String>, String> {
    Ok(ids.iter().map(|id| (*id, String::new())).collect())
}

#[redis_cached(ttl = "60s", batch)]
async fn batch_without_a_key(ids: &[u64]) -> Result<HashMap<u64, String>, String> {
    Ok(ids.iter().map(|id| (*id, String::new())).collect())
}

#[redis_cached(key = "e:<id>", ttl = "60s", stale = "5m", fail_safe = "1h", batch)]
async fn batch_with_freshness(ids: &[u64]) -> Result<HashMap<u64, String>, String> {
    Ok(ids.iter().map(|id| (*id, String::new())).collect())
}

#[redis_cached(key = "f:<id>", ttl = "60s", batch = true)]
async fn batch_with_a_value(ids: &[u64]) -> Result<HashMap<u64, String>, String> {
    Ok(ids.iter().map(|id| (*id, String::new())).collect())
}

#[redis_cached(key = "g:<id>", ttl = "60s", batch)]
async fn batch_generic<K: Clone>(ids: &[u64], _k: K) -> Result<HashMap<u64, String>, String> {
    Ok(ids.iter().map(|id| (*id, String::new())).collect())
}

#[redis_cached(key = "h:<id>", ttl = "60s", batch)]
async fn batch_two_collections(ids: &[u64], more: Vec<u64>) -> Result<HashMap<u64, String>, String> {
    Ok(ids.iter().chain(&more).map(|id| (*id, String::new())).collect())
}

struct Repo;

impl Repo {
    #[redis_cached(key = "i:<id>", ttl = "60s", cache = &cached_redis::Cache::disabled(), batch)]
    async fn batch_by_value_self(self, ids: &[u64]) -> Result<HashMap<u64, String>, String> {
        Ok(ids.iter().map(|id| (*id, String::new())).collect())
    }
}

fn main() {}
