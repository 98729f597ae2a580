// Failed on 73b196f (found by the adversary, fixed since; the bug predates near_by_default).
// A method of a generic `impl` returning `Result<T, E>` with the `impl`'s `T` (no bound
// beyond serde's) and an error that can be cloned: the failure probe (whether joiners share a
// failed load's error) asks `T: 'static`, which method lookup does not weigh, so it is picked
// and the bound fails. It looks only at the function's own generic parameters. Not added by
// `near_by_default`: the same expansion fails with the near probe switched off.
use cached_redis::redis_cached;
use serde::{Serialize, de::DeserializeOwned};

pub struct Store<T>(cached_redis::Cache, std::marker::PhantomData<T>);

impl<T: Default + Serialize + DeserializeOwned> Store<T> {
    #[redis_cached(key = "item:<T>:<id>", ttl = "60s", cache = &self.0)]
    pub async fn item(&self, id: u64) -> Result<T, String> {
        let _ = id;
        Ok(T::default())
    }
}

fn main() {}
