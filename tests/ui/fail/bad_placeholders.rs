// Placeholder forms that are refused at the template literal, with what to write.
use cached_redis::redis_cached;

#[redis_cached(key = "a:<id:debug>", ttl = "60s")]
async fn unknown_format(id: u64) -> Option<u64> {
    Some(id)
}

#[redis_cached(key = "b:<id.r#self>", ttl = "60s")]
async fn keyword_field(id: (u64,)) -> Option<u64> {
    Some(id.0)
}

#[redis_cached(key = "c:<T.name>:<id>", ttl = "60s")]
async fn type_with_field<T>(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
