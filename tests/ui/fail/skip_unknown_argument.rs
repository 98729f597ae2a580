// A name in `skip` that is no argument: the error lists the arguments, as an unknown
// placeholder's does.
use cached_redis::redis_cached;

#[redis_cached(ttl = "60s", skip = "reqid")]
async fn get_user(req_id: &str, id: u64) -> Result<u64, String> {
    let _ = req_id;
    Ok(id)
}

fn main() {}
