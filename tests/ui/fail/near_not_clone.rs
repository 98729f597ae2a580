// `near` on a function whose value is not `Clone`: reported at the `near` literal, with the
// cheap way out (`Arc<T>`).
use cached_redis::redis_cached;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Report {
    rows: Vec<u64>,
}

#[redis_cached(key = "report:<id>", ttl = "60s", near = "5s")]
async fn report(id: u64) -> Result<Report, String> {
    Ok(Report { rows: vec![id] })
}

fn main() {}
