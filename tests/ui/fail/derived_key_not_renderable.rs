// Without a `key` template, every argument is part of the key: a database pool is reported at
// the argument, with both ways out (`skip = "pool"`, or a `key` template that leaves it out).
use cached_redis::redis_cached;

struct PgPool;

#[redis_cached(ttl = "60s")]
async fn get_user(pool: &PgPool, id: u64) -> Result<u64, String> {
    let _ = pool;
    Ok(id)
}

// An argument of a generic type keeps `KeyPart`'s bound, which the compiler suggests adding.
#[redis_cached(ttl = "60s")]
async fn by_name<N: AsRef<str> + Sync>(name: N) -> Option<u64> {
    let _ = name.as_ref();
    None
}

fn main() {}
