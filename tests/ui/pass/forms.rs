// Every form the attribute accepts.
use cached_redis::{Cache, KeyPart, KeyWriter, redis_cached};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: u64,
}

#[derive(Debug)]
struct DbError;

impl From<std::num::ParseIntError> for DbError {
    fn from(_: std::num::ParseIntError) -> Self {
        DbError
    }
}

type DbResult<T> = std::result::Result<T, DbError>;

struct TenantId(u32);

impl KeyPart for TenantId {
    fn write_key_part(&self, out: &mut KeyWriter) {
        use std::fmt::Write;
        let _ = write!(out, "t{}", self.0);
    }
}

fn app_cache() -> &'static Cache {
    unimplemented!()
}

/// Docs and attributes are kept.
#[redis_cached(key = "user:<id>:v1", ttl = "60s", jitter = "10%")]
#[must_use]
pub async fn get_user(id: u64) -> Result<User, DbError> {
    // `?` converts into the function's error type; early returns work.
    let parsed: u64 = "7".parse()?;
    if parsed == 0 {
        return Err(DbError);
    }
    Ok(User { id })
}

#[redis_cached(key = "find:<name>", ttl = "1h30m", none_ttl = "5s", lock_ttl = "2s", max_load = "10s")]
pub(crate) async fn find(name: &str) -> Option<User> {
    (!name.is_empty()).then_some(User { id: 1 })
}

#[redis_cached(ttl = "500ms", jitter = "100ms", cache = app_cache())]
async fn plain(a: u8, b: Option<String>, c: TenantId) -> Vec<u64> {
    let _ = (a, b, c.0);
    vec![1, 2, 3]
}

/// Codec and compression, per function.
#[redis_cached(key = "report:<id>", ttl = "10m", codec = "msgpack", compress_above = "16KiB")]
async fn report(id: u64) -> Result<Vec<u64>, DbError> {
    Ok(vec![id; 100])
}

#[redis_cached(key = "small:<id>", ttl = "10m", codec = "json", compress_above = "never")]
async fn small(id: u64) -> Result<u64, DbError> {
    Ok(id)
}

#[redis_cached(key = "alias:<id>", ttl = "1d")]
async fn aliased(id: u64) -> DbResult<u64> {
    Ok(id)
}

#[redis_cached(key = "pair:<pair.0>:<pair.1>", ttl = "5m", jitter = "2.5%")]
async fn tuple_fields(pair: (u32, String)) -> Result<String, DbError> {
    Ok(pair.1)
}

struct Repo {
    cache: Cache,
    region: String,
}

impl Repo {
    #[redis_cached(key = "product:<self.region>:<id>", ttl = "60s", cache = &self.cache)]
    pub async fn product(&self, id: u64) -> Result<String, DbError> {
        Ok(format!("{}-{id}", self.region))
    }

    #[redis_cached(key = "count", ttl = "10s", cache = &self.cache)]
    async fn count(&self) -> Result<u64, DbError> {
        Ok(self.region.len() as u64)
    }

    async fn write(&self, id: u64) -> Result<(), cached_redis::Error> {
        self.invalidate_product(id).await?;
        self.invalidate_count().await?;
        Ok(())
    }
}

/// `none_ttl` through an alias of `Result<Option<T>, E>`.
#[redis_cached(key = "maybe:<id>", ttl = "60s", none_ttl = "5s")]
async fn maybe_user(id: u64) -> DbResult<Option<User>> {
    Ok((id == 1).then_some(User { id }))
}

/// A body with an inner attribute.
#[redis_cached(key = "inner:<id>", ttl = "60s")]
async fn inner_attribute(id: u64) -> Result<u64, DbError> {
    #![allow(clippy::identity_op)]
    Ok(id * 1)
}

/// A cached function written by a `macro_rules!` macro, its body a `$body:block` fragment.
macro_rules! cached_getter {
    ($name:ident, $id:ident, $body:block) => {
        #[redis_cached(key = "macro:<id>", ttl = "60s")]
        async fn $name($id: u64) -> Result<u64, DbError> $body
    };
}

cached_getter!(from_a_macro, id, { Ok(id) });

async fn writes() -> Result<(), cached_redis::Error> {
    invalidate_get_user(1).await?;
    invalidate_find("ada").await?;
    invalidate_plain(1, None, TenantId(3)).await?;
    invalidate_aliased(2).await?;
    invalidate_tuple_fields((1, "x".into())).await?;
    // `update_*` infers its closure's argument: the `Ok` value, through an alias too, and the
    // `Some` inside a `Result<Option<T>, E>`'s `Ok` is the `Option` itself.
    update_get_user(1, |user| user.id += 1).await?;
    update_aliased(2, |n| *n += 1).await?;
    update_maybe_user(3, |user| *user = None).await?;
    Ok(())
}

/// A method of a trait impl: `helpers = false`, since generated helpers would not be members
/// of the trait (E0407); the write path uses `Cache::invalidate` with the key.
trait Lookup {
    async fn lookup(&self, id: u64) -> Result<String, DbError>;
}

impl Lookup for Repo {
    #[redis_cached(key = "lookup:<id>", ttl = "60s", cache = &self.cache, helpers = false)]
    async fn lookup(&self, id: u64) -> Result<String, DbError> {
        Ok(format!("{}-{id}", self.region))
    }
}

/// A `&mut self` method that reads its cache from `self` and changes `self` in its body.
struct Counter {
    cache: Cache,
    loads: u64,
}

impl Counter {
    #[redis_cached(key = "counted:<id>", ttl = "60s", cache = &self.cache)]
    async fn counted(&mut self, id: u64) -> Result<u64, DbError> {
        self.loads += 1;
        Ok(id + self.loads)
    }
}

/// `cache_if`: a closure on the cached value (the `Ok` value of a `Result`), or a path.
#[redis_cached(key = "list:<page>", ttl = "60s", cache_if = |users: &Vec<u64>| !users.is_empty())]
async fn list(page: u32) -> Result<Vec<u64>, DbError> {
    Ok(vec![u64::from(page)])
}

/// `cache_if` without a type annotation: the value's type is known by then.
#[redis_cached(key = "names:<page>", ttl = "60s", cache_if = |names| !names.is_empty())]
async fn names(page: u32) -> Result<Vec<String>, DbError> {
    Ok(vec![page.to_string()])
}

/// A state taken by value, its cache borrowed from it while the body uses it too.
#[derive(Clone)]
struct AppState {
    cache: Cache,
    prefix: String,
}

#[redis_cached(key = "owned:<id>", ttl = "60s", cache = &state.cache)]
async fn owned_state(state: AppState, id: u64) -> Result<String, DbError> {
    Ok(format!("{}{id}", state.prefix))
}

/// A generic impl: `<T>` names the impl's type parameter, which the attribute cannot see.
struct Store<T>(Cache, std::marker::PhantomData<T>);

impl<T: Default + Serialize + serde::de::DeserializeOwned> Store<T> {
    #[redis_cached(key = "item:<T>:<id>", ttl = "60s", cache = &self.0)]
    async fn item(&self, id: u64) -> Result<T, DbError> {
        let _ = id;
        Ok(T::default())
    }
}

/// A generic handle left out of the key: the helpers do not take `D`, so callers need not
/// name it.
trait Db {
    fn name(&self) -> String;
}

#[redis_cached(key = "row:<id>", ttl = "60s")]
async fn row<D: Db + Sync>(db: &D, id: u64) -> Result<String, DbError>
where
    D: Send,
{
    Ok(format!("{}:{id}", db.name()))
}

async fn row_writes() -> Result<(), cached_redis::Error> {
    invalidate_row(1).await?;
    let _key = row_key(1);
    update_row(1, |s| s.push('!')).await?;
    Ok(())
}

/// `skip` leaves an argument out of a derived key too.
#[redis_cached(ttl = "60s", skip = "trace")]
async fn traced(id: u64, trace: &str) -> Result<u64, DbError> {
    let _ = trace;
    Ok(id)
}

fn worth_keeping(value: &Option<User>) -> bool {
    value.as_ref().is_some_and(|u| u.id > 0)
}

#[redis_cached(key = "kept:<id>", ttl = "60s", cache_if = worth_keeping)]
async fn kept(id: u64) -> Option<User> {
    Some(User { id })
}

async fn method_writes(repo: &Repo) -> Result<bool, cached_redis::Error> {
    repo.update_product(1, |name| name.push('!')).await
}

fn main() {
    let _ = (get_user(1), find("x"), plain(1, None, TenantId(1)), aliased(1));
    let _ = tuple_fields((1, String::new()));
    let _ = (inner_attribute(1), from_a_macro(1), from_a_macro_key(1), maybe_user(1));
    let _ = writes();
    let _ = row_writes();
    let _ = (list(1), kept(1), names(1), traced(1, "t"));
    let _ = (report(1), small(1));
    let _ = |state: AppState| owned_state(state, 1);
    let _ = |store: &'static Store<u8>| store.item(1);
    let _ = |repo: &'static Repo| repo.lookup(1);
    let _ = |counter: &'static mut Counter| counter.counted(1);
    let _ = |repo: &'static Repo| method_writes(repo);
    let _ = |repo: &'static Repo| (repo.product(1), repo.count(), repo.write(1));
}
