use std::collections::{BTreeSet, HashMap};

use cached_redis::{Cache, redis_cached};

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Product {
    name: String,
}

type Products = Result<HashMap<u64, Product>, std::io::Error>;

#[redis_cached(key = "product:<id>:v1", ttl = "60s", jitter = "10%", batch)]
async fn products(ids: &[u64]) -> Products {
    Ok(ids.iter().map(|&id| (id, Product { name: id.to_string() })).collect())
}

struct Repo {
    cache: Cache,
    prefix: String,
}

impl Repo {
    #[redis_cached(key = "repo:<self.prefix>:<sku>", ttl = "60s", cache = &self.cache, batch)]
    async fn by_sku(&self, skus: &BTreeSet<String>) -> HashMap<String, Product> {
        skus.iter()
            .map(|sku| (sku.clone(), Product { name: format!("{}{sku}", self.prefix) }))
            .collect()
    }
}

fn main() {
    let _ = products(&[1, 2]);
    let _ = invalidate_products(&[1, 2]);
    let _ = products_key(1);
    let repo = Repo { cache: Cache::disabled(), prefix: "p".to_owned() };
    let skus = BTreeSet::from(["a".to_owned()]);
    let _ = repo.by_sku(&skus);
    let _ = repo.invalidate_by_sku(&skus);
}
