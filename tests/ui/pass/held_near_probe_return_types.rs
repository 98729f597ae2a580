// Return types the near probe (and the failure probe) must not reject, which compile now:
// a concrete type's associated type (`<Concrete as Repo>::Row`), `Self::Out` in a trait impl,
// boxed and shared `dyn Error` errors, const generics (the function's own and an `impl`'s,
// named with several letters), a macro in type position naming concrete types, and a
// longer-named `impl` parameter with `near = "off"` and an error that cannot be cloned (the
// guide's escape; with a cloneable error it fails: ui/fail/impl_param_long_name_cloneable_error.rs).
use cached_redis::{Cache, redis_cached};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

#[derive(Debug)]
pub struct DbError;

pub trait Repo {
    type Row;
}

pub struct Concrete;

impl Repo for Concrete {
    type Row = u64;
}

#[redis_cached(key = "assoc:<id>", ttl = "60s", cache = cache)]
pub async fn assoc(cache: &Cache, id: u64) -> Result<<Concrete as Repo>::Row, DbError> {
    Ok(id)
}

pub trait Loader {
    type Out;
    async fn load(&self, id: u64) -> Option<Self::Out>;
}

pub struct L(pub Cache);

impl Loader for L {
    type Out = String;

    #[redis_cached(key = "load:<id>", ttl = "60s", cache = &self.0, helpers = false)]
    async fn load(&self, id: u64) -> Option<Self::Out> {
        Some(id.to_string())
    }
}

#[redis_cached(key = "boxed:<id>", ttl = "60s", cache = cache)]
pub async fn boxed_err(
    cache: &Cache,
    id: u64,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    Ok(id)
}

#[redis_cached(key = "arc:<id>", ttl = "60s", cache = cache)]
pub async fn arc_err(
    cache: &Cache,
    id: u64,
) -> Result<u64, std::sync::Arc<dyn std::error::Error + Send + Sync>> {
    Ok(id)
}

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Buf<const LEN: usize>(Vec<u8>);

#[redis_cached(key = "konst:<id>", ttl = "60s", cache = cache)]
pub async fn konst<const LEN: usize>(cache: &Cache, id: u64) -> Result<Buf<LEN>, String> {
    let _ = id;
    Ok(Buf::default())
}

pub struct Sized2<const LEN: usize>(pub Cache);

impl<const LEN: usize> Sized2<LEN> {
    #[redis_cached(key = "buf:<id>", ttl = "60s", cache = &self.0)]
    pub async fn buf(&self, id: u64) -> Result<Buf<LEN>, String> {
        let _ = id;
        Ok(Buf::default())
    }
}

macro_rules! concrete_result {
    () => { Result<Vec<String>, DbError> };
}

#[redis_cached(key = "macro:<id>", ttl = "60s", cache = cache)]
pub async fn via_macro(cache: &Cache, id: u64) -> concrete_result!() {
    let _ = id;
    Ok(vec![])
}

pub struct Store<Row>(Cache, std::marker::PhantomData<Row>);

impl<Row: Clone + Send + Sync + Default + Serialize + DeserializeOwned> Store<Row> {
    #[redis_cached(key = "item:<id>", ttl = "60s", cache = &self.0, near = "off")]
    pub async fn item(&self, id: u64) -> Result<Row, DbError> {
        let _ = id;
        Ok(Row::default())
    }
}

fn main() {}
