// The same with a `Send + Sync` bound: the type may still borrow (`&Pool` is `Send`), and the
// expansion's `'static` bound fails. Without `stale` this compiles.
use cached_redis::redis_cached;

pub trait Source {
    fn base(&self) -> u64;
}

#[redis_cached(key = "row:<id>", ttl = "60s", stale = "5m")]
pub async fn row(source: impl Source + Send + Sync, id: u64) -> Result<u64, String> {
    Ok(source.base() + id)
}

fn main() {}
