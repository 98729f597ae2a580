// `near` with a value that is not `Clone` itself, behind an `Arc`; and with `cache_if`.
use std::sync::Arc;

use cached_redis::redis_cached;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Report {
    rows: Vec<u64>,
}

#[redis_cached(key = "report:<id>", ttl = "60s", near = "5s")]
async fn report(id: u64) -> Result<Arc<Report>, String> {
    Ok(Arc::new(Report { rows: vec![id] }))
}

#[redis_cached(key = "flag:<name>", ttl = "60s", near = "1s", cache_if = |v: &Option<bool>| v.is_some())]
async fn flag(name: &str) -> Option<bool> {
    Some(!name.is_empty())
}

fn main() {
    let _ = (report(1), flag("x"));
}
