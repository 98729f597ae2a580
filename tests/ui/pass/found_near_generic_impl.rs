// Failed on 73b196f (found by the adversary, fixed since): the near probe now passes over a
// return type naming what reads as an `impl`'s type parameter.
// Methods of generic `impl`s whose return type names the `impl`'s type parameter, bounded
// `Clone + Send + Sync` but not `'static`: the near probe (which `near_by_default` added to
// every function) cannot tell, and must keep nothing rather than fail to compile. The error
// type is not `Clone`, so the failure probe does not apply (see
// found_generic_impl_cloneable_error.rs for that one).
use cached_redis::redis_cached;
use serde::{Serialize, de::DeserializeOwned};

#[derive(Debug)]
pub struct DbError;

pub struct Store<T>(cached_redis::Cache, std::marker::PhantomData<T>);

impl<T: Clone + Send + Sync + Default + Serialize + DeserializeOwned> Store<T> {
    #[redis_cached(key = "item:<T>:<id>", ttl = "60s", cache = &self.0)]
    pub async fn item(&self, id: u64) -> Result<T, DbError> {
        let _ = id;
        Ok(T::default())
    }
}

pub trait Repo {
    type Row;
    async fn row(&self, id: u64) -> Option<Self::Row>;
}

impl<T: Clone + Send + Sync + Default + Serialize + DeserializeOwned> Repo for Store<T> {
    type Row = T;

    #[redis_cached(key = "row:<T>:<id>", ttl = "60s", cache = &self.0, helpers = false)]
    async fn row(&self, id: u64) -> Option<T> {
        let _ = id;
        Some(T::default())
    }
}

fn main() {}
