use std::rc::Rc;

use cached_redis::redis_cached;

async fn tick() {}

// Owned arguments: the refresh runs in the background, so the body must be `Send`.
#[redis_cached(key = "a:<id>", ttl = "60s", stale = "5m")]
async fn holds_an_rc(id: u64) -> Result<u64, String> {
    let local = Rc::new(id);
    tick().await;
    Ok(*local)
}

fn main() {}
