// A known limit, stated in the near cache's guide (found by the adversary as a bug of the
// guide's earlier advice): a method of a generic `impl` whose parameter has a longer name than
// one capital letter, returning `Result<Row, E>` with an `E` that is `Clone`, does not compile
// (`Row` may not live long enough), even with `near = "off"`: the probe of whether joiners share
// a failed load's error asks `Row: 'static`, and the expansion, which sees the function and
// not its `impl`, cannot tell `Row` is a parameter. It predates `near_by_default`. Adding `'static`
// to the parameter's bounds, as the compiler suggests, or naming it `T`
// (found_generic_impl_cloneable_error.rs) compiles.
use cached_redis::redis_cached;
use serde::{Serialize, de::DeserializeOwned};

pub struct Store<Row>(cached_redis::Cache, std::marker::PhantomData<Row>);

impl<Row: Clone + Send + Sync + Default + Serialize + DeserializeOwned> Store<Row> {
    #[redis_cached(key = "item:<id>", ttl = "60s", cache = &self.0, near = "off")]
    pub async fn item(&self, id: u64) -> Result<Row, String> {
        let _ = id;
        Ok(Row::default())
    }
}

fn main() {}
