// Failed on aa6dc53 (found by the adversary, fixed since: a return type written with a macro
// is not probed).
// Fails now (E0310, the parameter type `T` may not live long enough); compiled on d1c89bb
// (the error cannot be cloned, so the failure probe passes over it). A return type written
// as a macro whose expansion names the `impl`'s `T` (a `macro_rules!` type resolves `T` where
// it is used): the expansion's token check sees `row_result!()`, not `T`, so the near probe
// is written and asks `T: 'static`. Contrived; the escape is `near = "off"`, which the guide
// does not give for this case.
use cached_redis::redis_cached;
use serde::{Serialize, de::DeserializeOwned};

#[derive(Debug)]
pub struct DbError;

macro_rules! row_result {
    () => { Result<T, DbError> };
}

pub struct Store<T>(cached_redis::Cache, std::marker::PhantomData<T>);

impl<T: Clone + Send + Sync + Default + Serialize + DeserializeOwned> Store<T> {
    #[redis_cached(key = "item:<id>", ttl = "60s", cache = &self.0)]
    pub async fn item(&self, id: u64) -> row_result!() {
        let _ = id;
        Ok(T::default())
    }
}

fn main() {}
