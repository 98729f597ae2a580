// An `impl Trait` argument is an anonymous type parameter, which "no generics" does not see:
// the type it stands for may borrow (a caller passes `&Pool`) and need not be `Send`.
// Without `stale` this compiles.
use cached_redis::redis_cached;

pub trait Source {
    fn base(&self) -> u64;
}

#[redis_cached(key = "row:<id>", ttl = "60s", stale = "5m")]
pub async fn row(source: impl Source, id: u64) -> Result<u64, String> {
    Ok(source.base() + id)
}

fn main() {}
