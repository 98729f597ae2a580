// A method of a trait impl needs `helpers = false`: the helpers generated beside it would not
// be members of the trait. The attribute cannot see the `impl` it is in, so the compiler's
// E0407 for each helper (at the attribute) is followed by an error that says what to write.
use cached_redis::redis_cached;

trait Repo {
    async fn get(&self, id: u64) -> Result<u64, String>;
}

struct PgRepo;

impl Repo for PgRepo {
    #[redis_cached(key = "user:<id>", ttl = "60s")]
    async fn get(&self, id: u64) -> Result<u64, String> {
        Ok(id)
    }
}

fn main() {}
