//! A batch function whose body changes an argument it takes `mut`: the body needs the `mut`
//! (each run gets its own clone, declared as the argument is), so the user cannot remove it,
//! yet it must not warn (`unused_mut` on the argument), or a crate that denies warnings
//! does not build.
#![deny(warnings)]

use std::collections::HashMap;

use cached_redis::redis_cached;

#[redis_cached(key = "label:<prefix>:<id>", ttl = "60s", batch)]
async fn labels(mut prefix: String, ids: &[u64]) -> HashMap<u64, String> {
    prefix.push(':');
    ids.iter().map(|&id| (id, format!("{prefix}{id}"))).collect()
}

fn main() {
    let _ = labels;
}
