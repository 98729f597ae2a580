// Fails now (E0310, the parameter type `Row` may not live long enough); the guide's escape
// does not work. near.md: "A generic `impl` whose parameter has a longer name
// (`impl<Row> Store<Row>`) returning `Result<Row, E>` is not recognised and fails to compile
// (`T may not live long enough`): name the parameter with one capital letter, or write
// `near = "off"`." With `near = "off"` the near probe is gone, but the failure probe (whether
// joiners share a clone of a failed load's error) is not: it is skipped by the same rule,
// which does not look at `near = "off"`, and with an error that can be cloned (`String`) it
// asks `Row: 'static` and fails. (This failure predates near_by_default, as
// found_generic_impl_cloneable_error.rs's did; what is new is the guide's promise.) With an
// error that cannot be cloned, `near = "off"` does work (held_near_probe_return_types.rs).
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
