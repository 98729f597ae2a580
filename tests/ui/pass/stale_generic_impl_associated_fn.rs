// An associated function (no `self`) of a generic `impl`, taking the impl's `T` by value:
// the function has no generics of its own and no `&` or `'` in its signature, but `T` may be
// a reference type (`Repo<&Row>`). Without `stale` this compiles.
use cached_redis::redis_cached;

pub struct Repo<T>(std::marker::PhantomData<T>);

impl<T: Into<u64> + Send> Repo<T> {
    #[redis_cached(key = "row:<id>", ttl = "60s", stale = "5m", skip = "row")]
    pub async fn total(row: T, id: u64) -> Result<u64, String> {
        Ok(row.into() + id)
    }
}

fn main() {}
