// An argument that selects data but is named nowhere in the template would share one entry
// for all its values (`key = "String"` is `cached`'s key *type*, not a template here).
use cached_redis::{Cache, redis_cached};

#[redis_cached(key = "String", ttl = "60s")]
async fn by_id(id: u64) -> Result<u64, String> {
    Ok(id)
}

// Handles stay out of the key without ceremony; `skip` names what does not change the result.
#[redis_cached(key = "user:<id>", ttl = "60s", cache = cache, skip = "trace")]
async fn with_handles(cache: &Cache, pool: &std::sync::Mutex<u8>, id: u64, trace: bool) -> Result<u64, String> {
    let _ = (pool, trace);
    Ok(id)
}

#[redis_cached(key = "user:<id>", ttl = "60s", skip = "nope")]
async fn skips_nothing(id: u64) -> Result<u64, String> {
    Ok(id)
}

// A generic function whose result type depends on `T` must name `T` in its template.
#[redis_cached(key = "setting:<name>", ttl = "60s")]
async fn setting<T: Default + serde::Serialize + serde::de::DeserializeOwned>(name: &str) -> Option<T> {
    let _ = name;
    Some(T::default())
}

fn main() {}
