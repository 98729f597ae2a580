// Error types the expansion's error sharing must not reject: one that borrows from an
// argument, a generic one without `'static`, and `Self`'s in a generic impl (each shares
// nothing, and compiles as it did before sharing existed).
use cached_redis::{Cache, redis_cached};

#[redis_cached(key = "borrowed:<name>", ttl = "60s", cache = cache)]
async fn borrowed<'a>(cache: &Cache, name: &'a str) -> Result<u32, &'a str> {
    Err(name)
}

#[redis_cached(key = "generic:<E>:<id>", ttl = "60s", cache = cache)]
async fn generic<E: Clone + Send + Sync + From<u32>>(cache: &Cache, id: u32) -> Result<u32, E> {
    Err(E::from(id))
}

#[derive(Clone)]
struct Owned(u32);

// A concrete, owned, cloneable error: shared.
#[redis_cached(key = "owned:<id>", ttl = "60s", cache = cache)]
async fn owned(cache: &Cache, id: u32) -> Result<u32, Owned> {
    Err(Owned(id))
}

fn main() {
    let _ = (borrowed, generic::<u32>, owned);
}
