use cached_redis::redis_cached;

#[redis_cached(key = "a:<id>", ttl = "60s", codec = "bincode")]
async fn unknown_codec(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "b:<id>", ttl = "60s", codec = msgpack)]
async fn codec_not_a_string(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "c:<id>", ttl = "60s", compress_above = "16KB")]
async fn ambiguous_unit(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "d:<id>", ttl = "60s", compress_above = 16384)]
async fn size_not_a_string(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[redis_cached(key = "e:<id>", ttl = "60s", compress_above = "16")]
async fn size_without_unit(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
