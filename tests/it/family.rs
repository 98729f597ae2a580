//! `invalidate_all_<fn>()` and `Cache::invalidate_family`: every entry one template renders is
//! removed, and only those (not another template's that shares its start), loads in flight
//! are revoked, and keys shortened for their length are found by their readable start.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use cached_redis::{Cache, KeyFamily, redis_cached};
use cached_redis_tests::{RedisServer, assert_no_state_left, get_raw};
use tokio::sync::{Notify, mpsc};

#[redis_cached(key = "list:<category>:<page>", ttl = "60s", cache = cache)]
async fn page(cache: &Cache, category: &str, page: u32) -> Result<String, String> {
    Ok(format!("{category} page {page}"))
}

#[redis_cached(key = "list:<category>", ttl = "60s", cache = cache)]
async fn count(cache: &Cache, category: &str) -> Result<u32, String> {
    Ok(category.len() as u32)
}

#[redis_cached(key = "list:<category>:<page>:v2", ttl = "60s", cache = cache)]
async fn page_v2(cache: &Cache, category: &str, page: u32) -> Result<String, String> {
    Ok(format!("{category} page {page} v2"))
}

#[redis_cached(key = "item:<id>", ttl = "60s", cache = cache)]
async fn item(cache: &Cache, id: u64) -> Result<String, String> {
    Ok(format!("item {id}"))
}

#[redis_cached(key = "item:<id>-full", ttl = "60s", cache = cache)]
async fn item_full(cache: &Cache, id: &u64) -> Result<String, String> {
    Ok(format!("item {id}, in full"))
}

#[redis_cached(key = "named:<name>", ttl = "60s", cache = cache)]
async fn named(cache: &Cache, name: &str) -> Result<String, String> {
    Ok(format!("named {name}"))
}

#[redis_cached(key = "named:<id>-full", ttl = "60s", cache = cache)]
async fn named_full(cache: &Cache, id: u64) -> Result<String, String> {
    Ok(format!("named {id}, in full"))
}

/// `item:<id>` with an integer id takes only digits there, so a sibling template's
/// `item:7-full` is left alone; with a text argument (`named:<name>`) the key `named:7-full`
/// is one the template renders (`name = "7-full"`), and goes with the family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integer_argument_matches_only_integers() {
    let server = RedisServer::start();
    let cache = server.cache("family-integer").await;
    item(&cache, 7).await.unwrap();
    item_full(&cache, &7).await.unwrap();
    assert_eq!(invalidate_all_item(&cache).await.unwrap(), 1);
    assert!(!present(&server, &cache, &item_key(7)).await);
    assert!(present(&server, &cache, &item_full_key(&7)).await);
    assert_eq!(invalidate_all_item_full(&cache).await.unwrap(), 1);

    named(&cache, "ada").await.unwrap();
    named_full(&cache, 7).await.unwrap();
    assert_eq!(invalidate_all_named(&cache).await.unwrap(), 2, "documented");
}

async fn present(server: &RedisServer, cache: &Cache, key: &cached_redis::Key) -> bool {
    cache.settle().await;
    let mut conn = server.conn().await;
    get_raw(&mut conn, &cache.redis_key(key)).await.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_all_removes_one_templates_entries_and_no_others() {
    let server = RedisServer::start();
    let cache = server.cache("family-only").await;
    let other_namespace = server.cache("family-other").await;
    for category in ["books", "a:b", "x{y}", ""] {
        for n in 1..=3 {
            page(&cache, category, n).await.unwrap();
            page_v2(&cache, category, n).await.unwrap();
        }
        count(&cache, category).await.unwrap();
    }
    page(&other_namespace, "books", 1).await.unwrap();

    let removed = invalidate_all_page(&cache).await.unwrap();
    assert_eq!(removed, 12, "four categories of three pages");
    for category in ["books", "a:b", "x{y}", ""] {
        for n in 1..=3 {
            assert!(!present(&server, &cache, &page_key(category, n)).await);
            assert!(
                present(&server, &cache, &page_v2_key(category, n)).await,
                "`list:<category>:<page>:v2` is another template"
            );
        }
        assert!(
            present(&server, &cache, &count_key(category)).await,
            "`list:<category>` shares the start"
        );
    }
    assert!(present(&server, &other_namespace, &page_key("books", 1)).await);
    assert_eq!(invalidate_all_page(&cache).await.unwrap(), 0);
    assert_no_state_left(&cache).await;
}

static HELD_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "held:<id>", ttl = "60s", cache = cache, skip = "gate")]
async fn held(cache: &Cache, gate: &Gate, id: u32) -> Result<u32, String> {
    HELD_LOADS.fetch_add(1, Ordering::SeqCst);
    gate.started.send(id).await.unwrap();
    gate.release.notified().await;
    Ok(id)
}

struct Gate {
    started: mpsc::Sender<u32>,
    release: Notify,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_in_flight_is_revoked_and_stores_nothing() {
    let server = RedisServer::start();
    let cache = server.cache("family-flight").await;
    let (started, mut loading) = mpsc::channel(1);
    let gate = Arc::new(Gate {
        started,
        release: Notify::new(),
    });
    let call = tokio::spawn({
        let (cache, gate) = (cache.clone(), gate.clone());
        async move { held(&cache, &gate, 7).await }
    });
    // The loader runs only once the lease is held.
    assert_eq!(loading.recv().await, Some(7));
    let removed = invalidate_all_held(&cache).await.unwrap();
    assert_eq!(removed, 1, "the lease");
    gate.release.notify_one();
    assert_eq!(
        call.await.unwrap(),
        Ok(7),
        "the caller still gets its value"
    );
    cache.settle().await;
    assert!(
        !present(&server, &cache, &held_key(7)).await,
        "a load that began before the removal stores nothing"
    );
    assert_eq!(cache.stats().stale_refused, 1);
    assert_no_state_left(&cache).await;
}

struct Repo {
    cache: Cache,
}

impl Repo {
    #[redis_cached(key = "repo:<id>", ttl = "60s", cache = &self.cache)]
    async fn get(&self, id: &str) -> Result<String, String> {
        Ok(id.to_uppercase())
    }
}

/// A derived key: the family is the function's path and its arguments.
#[redis_cached(ttl = "60s", cache = cache)]
async fn derived(cache: &Cache, a: u32, b: &str) -> Result<String, String> {
    Ok(format!("{a}{b}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_derived_keys_and_long_keys() {
    let server = RedisServer::start();
    let cache = server.cache("family-forms").await;
    let repo = Repo {
        cache: cache.clone(),
    };
    let long = "x".repeat(cached_redis::MAX_KEY_LEN * 2);
    for id in ["a", "b", long.as_str()] {
        repo.get(id).await.unwrap();
    }
    assert!(repo.get_key(&long).as_str().contains("\\#"), "shortened");
    derived(&cache, 1, "x").await.unwrap();
    derived(&cache, 2, "y:z").await.unwrap();

    assert_eq!(repo.invalidate_all_get().await.unwrap(), 3);
    for id in ["a", "b", long.as_str()] {
        assert!(!present(&server, &cache, &repo.get_key(id)).await);
    }
    assert!(present(&server, &cache, &derived_key(1, "x")).await);
    assert_eq!(invalidate_all_derived(&cache).await.unwrap(), 2);
    assert!(!present(&server, &cache, &derived_key(2, "y:z")).await);

    // Without the attribute.
    count(&cache, "c").await.unwrap();
    let family = KeyFamily::builder().text("list:").part().build();
    assert_eq!(cache.invalidate_family(&family).await.unwrap(), 1);
    assert_no_state_left(&cache).await;
}

/// A generic function with a derived key: one family per type argument.
#[redis_cached(ttl = "60s", cache = cache)]
async fn setting<T: Default + serde::Serialize + serde::de::DeserializeOwned>(
    cache: &Cache,
    name: &str,
) -> Result<T, String> {
    let _ = name;
    Ok(T::default())
}

/// An explicit key with `<T>`: the family holds the named type's entries only.
#[redis_cached(key = "typed:<T>:<name>", ttl = "60s", cache = cache)]
async fn typed<T: Default + serde::Serialize + serde::de::DeserializeOwned>(
    cache: &Cache,
    name: &str,
) -> Result<T, String> {
    let _ = name;
    Ok(T::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_functions_family_is_one_type_arguments() {
    let server = RedisServer::start();
    let cache = server.cache("family-typed").await;
    typed::<u32>(&cache, "a").await.unwrap();
    typed::<String>(&cache, "a").await.unwrap();
    assert_eq!(invalidate_all_typed::<u32>(&cache).await.unwrap(), 1);
    assert!(present(&server, &cache, &typed_key::<String>("a")).await);
    assert!(!present(&server, &cache, &typed_key::<u32>("a")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_derived_generic_functions_family_is_one_type_arguments() {
    let server = RedisServer::start();
    let cache = server.cache("family-generic").await;
    setting::<u32>(&cache, "a").await.unwrap();
    setting::<u32>(&cache, "b").await.unwrap();
    setting::<String>(&cache, "a").await.unwrap();
    assert_eq!(invalidate_all_setting::<u32>(&cache).await.unwrap(), 2);
    assert!(present(&server, &cache, &setting_key::<String>("a")).await);
    assert!(!present(&server, &cache, &setting_key::<u32>("b")).await);
}

#[redis_cached(key = "slots:<times>", ttl = "60s", cache = cache)]
async fn slots(cache: &Cache, times: &[&str]) -> Result<usize, String> {
    Ok(times.len())
}

/// A template whose fixed start is longer than a shortened key keeps readable.
#[redis_cached(
    key = "a-very-long-family-name-that-goes-on-and-on-past-the-readable-start-of-a-shortened-key-which-is-about-one-hundred-and-twenty-bytes:<id>",
    ttl = "60s",
    cache = cache
)]
async fn long_start(cache: &Cache, id: &str) -> Result<usize, String> {
    Ok(id.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_elements_with_colons_and_long_fixed_starts_are_found() {
    let server = RedisServer::start();
    let cache = server.cache("family-lists").await;
    slots(&cache, &["12:00", "13:30"]).await.unwrap();
    slots(&cache, &["{a}", "b\\"]).await.unwrap();
    assert_eq!(invalidate_all_slots(&cache).await.unwrap(), 2);
    let long = "x".repeat(cached_redis::MAX_KEY_LEN);
    long_start(&cache, &long).await.unwrap();
    long_start(&cache, "short").await.unwrap();
    assert!(long_start_key(&long).as_str().contains("\\#"), "shortened");
    assert_eq!(invalidate_all_long_start(&cache).await.unwrap(), 2);
    assert_no_state_left(&cache).await;
}

struct Ctx {
    cache: Cache,
    tenant: u32,
}

/// The key reads the context the cache comes from, but the cache is the same for every key.
#[redis_cached(key = "t:<ctx.tenant>:<id>", ttl = "60s", cache = &ctx.cache)]
async fn in_context(ctx: &Ctx, id: u32) -> Result<u32, String> {
    Ok(ctx.tenant + id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_from_a_keyed_argument_still_has_its_family() {
    let server = RedisServer::start();
    let ctx = Ctx {
        cache: server.cache("family-ctx").await,
        tenant: 3,
    };
    in_context(&ctx, 1).await.unwrap();
    in_context(
        &Ctx {
            tenant: 4,
            ..ctx_clone(&ctx)
        },
        1,
    )
    .await
    .unwrap();
    assert_eq!(invalidate_all_in_context(&ctx).await.unwrap(), 2);
}

fn ctx_clone(ctx: &Ctx) -> Ctx {
    Ctx {
        cache: ctx.cache.clone(),
        tenant: ctx.tenant,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_or_unreachable_cache_says_so() {
    let disabled = Cache::disabled();
    assert_eq!(invalidate_all_page(&disabled).await.unwrap(), 0);
    let mut server = RedisServer::start();
    let cache = server.cache("family-down").await;
    server.kill();
    assert!(invalidate_all_page(&cache).await.is_err());
}
