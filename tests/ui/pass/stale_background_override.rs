// `background = false`: a type parameter the expansion cannot tell from a type (`Db`, of the
// enclosing `impl`) is named in the body, and the refresh runs in its caller. `background = true`:
// a `&'static` argument, which the signature alone would keep in the caller, refreshes in the
// background.
use cached_redis::redis_cached;

pub struct Repo<Db>(std::marker::PhantomData<Db>);

impl<Db: Into<u64> + Send> Repo<Db> {
    #[redis_cached(key = "row:<id>", ttl = "60s", stale = "5m", skip = "db", background = false)]
    pub async fn total(db: Db, id: u64) -> Result<u64, String> {
        Ok(db.into() + id)
    }
}

#[redis_cached(key = "name:<id>", ttl = "60s", stale = "5m", skip = "prefix", background = true)]
pub async fn name(prefix: &'static str, id: u64) -> Result<String, String> {
    Ok(format!("{prefix}{id}"))
}

fn main() {}
