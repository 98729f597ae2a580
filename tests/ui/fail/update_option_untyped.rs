// A `Result<Option<T>, E>` function's `update_*` takes `|row: &mut T|` (run on a cached
// `Ok(Some(_))`) or `|cached: &mut Option<T>|`: a closure that names neither is ambiguous.
use cached_redis::redis_cached;

#[derive(serde::Serialize, serde::Deserialize)]
struct User {
    name: String,
}

#[redis_cached(key = "user:<id>", ttl = "60s")]
async fn get_user(id: u64) -> Result<Option<User>, String> {
    Ok(Some(User { name: format!("{id}") }))
}

async fn write(id: u64) -> Result<bool, cached_redis::Error> {
    update_get_user(id, |user: &mut User| user.name.push('!')).await?;
    update_get_user(id, |cached: &mut Option<User>| *cached = None).await?;
    update_get_user(id, |user| user.name.push('!')).await
}

fn main() {
    let _ = (get_user(1), write(1));
}
