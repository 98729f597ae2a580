//! What the attribute generates: readable and injective keys, derived keys, field paths,
//! methods with `&self`, plain return types, the invalidation helper's signature, and futures
//! that stay `Send`.

use std::sync::atomic::{AtomicU32, Ordering};

use cached_redis::{Cache, redis_cached};
use cached_redis_tests::{RedisServer, get_raw};
use serde::{Deserialize, Serialize};

async fn scan(server: &RedisServer, pattern: &str) -> Vec<String> {
    cached_redis_tests::scan_keys(&mut server.conn().await, pattern).await
}

static PAIR_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "pair:<a>:<b>", ttl = "60s", cache = cache)]
async fn pair(cache: &Cache, a: &str, b: &str) -> Result<String, String> {
    PAIR_LOADS.fetch_add(1, Ordering::SeqCst);
    Ok(format!("{a}|{b}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argument_values_never_share_a_key_and_keys_stay_readable() {
    let server = RedisServer::start();
    let cache = server.cache("inj").await;
    assert_eq!(pair(&cache, "x:y", "z").await.as_deref(), Ok("x:y|z"));
    assert_eq!(pair(&cache, "x", "y:z").await.as_deref(), Ok("x|y:z"));
    assert_eq!(pair(&cache, "x:y", "z").await.as_deref(), Ok("x:y|z"));
    assert_eq!(pair(&cache, "x", "y:z").await.as_deref(), Ok("x|y:z"));
    assert_eq!(pair(&cache, "{x}", "\\").await.as_deref(), Ok("{x}|\\"));
    cache.settle().await;
    assert_eq!(PAIR_LOADS.load(Ordering::SeqCst), 3);
    assert_eq!(
        scan(&server, "*pair:*").await,
        [
            r"inj:{pair:\{x\}:\\}",
            r"inj:{pair:x:y\:z}",
            r"inj:{pair:x\:y:z}",
        ]
    );
    assert!(invalidate_pair(&cache, "x", "y:z").await.unwrap());
    assert_eq!(scan(&server, "*pair:x*").await, [r"inj:{pair:x\:y:z}"]);
}

#[redis_cached(ttl = "60s", cache = cache)]
async fn derived(cache: &Cache, id: u64, tag: String) -> u64 {
    id * 2 + tag.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_omitted_key_is_the_function_path_and_every_argument() {
    let server = RedisServer::start();
    let cache = server.cache("derived").await;
    assert_eq!(derived(&cache, 7, "abc".into()).await, 17);
    cache.settle().await;
    // A plain return type is cached too.
    let mut conn = server.conn().await;
    let stored = get_raw(&mut conn, "derived:{attribute::derived:7:abc}")
        .await
        .expect("stored");
    assert!(
        stored.starts_with(br#"{"v":17,"#),
        "{}",
        String::from_utf8_lossy(&stored)
    );
    assert_eq!(derived(&cache, 7, "abc".into()).await, 17);
    assert_eq!(cache.stats().hits, 1);
    assert!(invalidate_derived(&cache, 7, "abc".into()).await.unwrap());
}

/// Two modules with a function of the same name and signature.
mod shop {
    #[cached_redis::redis_cached(ttl = "60s", cache = cache)]
    pub(crate) async fn count(cache: &cached_redis::Cache) -> u64 {
        let _ = cache;
        1
    }
}
mod blog {
    #[cached_redis::redis_cached(ttl = "60s", cache = cache)]
    pub(crate) async fn count(cache: &cached_redis::Cache) -> u64 {
        let _ = cache;
        2
    }
}

/// Two types with a method of the same name, one generic.
struct Orders;
struct Posts<T>(std::marker::PhantomData<T>);

impl Orders {
    #[redis_cached(ttl = "60s", cache = cache)]
    async fn by_id(cache: &Cache, id: u64) -> String {
        format!("order {id}")
    }
}

impl<T> Posts<T> {
    #[redis_cached(ttl = "60s", cache = cache)]
    async fn by_id(cache: &Cache, id: u64) -> String {
        format!("post {id} of {}", std::any::type_name::<T>())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_keys_of_same_named_functions_never_collide() {
    let server = RedisServer::start();
    let cache = server.cache("same").await;
    for _ in 0..2 {
        assert_eq!(shop::count(&cache).await, 1);
        assert_eq!(blog::count(&cache).await, 2);
        assert_eq!(Orders::by_id(&cache, 1).await, "order 1");
        assert_eq!(Posts::<u8>::by_id(&cache, 1).await, "post 1 of u8");
        assert_eq!(Posts::<u16>::by_id(&cache, 1).await, "post 1 of u16");
    }
    assert_eq!(cache.stats().hits, 5, "each function hits its own entry");
    assert_eq!(
        scan(&server, "same:*").await,
        [
            "same:{attribute::Orders::by_id:1}",
            "same:{attribute::Posts<u16>::by_id:1}",
            "same:{attribute::Posts<u8>::by_id:1}",
            "same:{attribute::blog::count}",
            "same:{attribute::shop::count}",
        ],
        "readable: the module path and the impl type"
    );
    assert!(shop::invalidate_count(&cache).await.unwrap());
    assert!(Posts::<u8>::invalidate_by_id(&cache, 1).await.unwrap());
    assert_eq!(
        scan(&server, "same:*").await,
        [
            "same:{attribute::Orders::by_id:1}",
            "same:{attribute::Posts<u16>::by_id:1}",
            "same:{attribute::blog::count}",
        ],
        "each helper removes its own function's entry"
    );
}

/// The cache is picked by the id: the id still selects the data.
#[redis_cached(ttl = "60s", cache = &shards[(id % 2) as usize])]
async fn sharded(shards: &[Cache], id: u64) -> u64 {
    id * 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_argument_that_only_picks_the_cache_stays_in_a_derived_key() {
    let server = RedisServer::start();
    let shards = [server.cache("shard0").await, server.cache("shard1").await];
    for _ in 0..2 {
        assert_eq!(sharded(&shards, 1).await, 10);
        assert_eq!(
            sharded(&shards, 3).await,
            30,
            "ids 1 and 3 share a shard, not an entry"
        );
    }
    assert_eq!(
        scan(&server, "shard1:*").await,
        [
            "shard1:{attribute::sharded:1}",
            "shard1:{attribute::sharded:3}"
        ]
    );
    assert!(invalidate_sharded(&shards, 3).await.unwrap());
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

struct Directory {
    cache: Cache,
    tenant: String,
    loads: AtomicU32,
}

impl Directory {
    /// Looks a user's display name up.
    #[redis_cached(key = "name:<self.tenant>:<user.id>", ttl = "60s", cache = &self.cache)]
    pub async fn display_name(&self, user: &User) -> Option<String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Some(format!("{} ({})", user.name, self.tenant))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_read_fields_of_self_and_of_arguments() {
    let server = RedisServer::start();
    let dir = Directory {
        cache: server.cache("dir").await,
        tenant: "acme".into(),
        loads: AtomicU32::new(0),
    };
    let ada = User {
        id: 1,
        name: "Ada".into(),
    };
    assert_eq!(dir.display_name(&ada).await.as_deref(), Some("Ada (acme)"));
    assert_eq!(dir.display_name(&ada).await.as_deref(), Some("Ada (acme)"));
    assert_eq!(dir.loads.load(Ordering::SeqCst), 1);
    assert_eq!(scan(&server, "dir:*").await, ["dir:{name:acme:1}"]);
    // The helper is a method taking the key's arguments.
    assert!(dir.invalidate_display_name(&ada).await.unwrap());
    assert_eq!(dir.display_name(&ada).await.as_deref(), Some("Ada (acme)"));
    assert_eq!(dir.loads.load(Ordering::SeqCst), 2);
}

#[redis_cached(key = "user:<id>:v1", ttl = "60s", jitter = "10%")]
async fn global_user(id: u64) -> Result<User, std::io::Error> {
    Ok(User {
        id,
        name: "x".into(),
    })
}

fn assert_send<T: Send>(_: &T) {}

#[test]
fn cached_futures_are_send_for_multi_threaded_servers() {
    let user = global_user(1);
    assert_send(&user);
    let invalidate = invalidate_global_user(1);
    assert_send(&invalidate);
    let cache_fn = |cache: &'static Cache| derived(cache, 1, String::new());
    let _ = cache_fn;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_removes_every_entry_of_the_namespace_and_nothing_else() {
    let server = RedisServer::start();
    let cache = server.cache("clear*me").await;
    let other = server.cache("other").await;
    for id in 0..1200 {
        derived(&cache, id, String::new()).await;
    }
    derived(&other, 1, String::new()).await;
    cache.settle().await;
    other.settle().await;
    let mut conn = server.conn().await;
    let lease = format!("{}:lease", cache.redis_key(&cached_redis::Key::raw("x")));
    let _: () = redis::cmd("SET")
        .arg(&lease)
        .arg("t")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        cache.clear().await.unwrap(),
        1201,
        "values and leases, over several SCAN batches"
    );
    assert!(scan(&server, "clear*").await.is_empty());
    assert_eq!(scan(&server, "other:*").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_ttl_report_on_redis_and_an_entry() {
    let server = RedisServer::start();
    let cache = server.cache("ping").await;
    assert!(cache.ping().await.unwrap() < std::time::Duration::from_secs(1));
    let key = cached_redis::Key::raw("attribute::derived:5:");
    assert_eq!(cache.ttl(&key).await.unwrap(), None, "nothing cached yet");
    derived(&cache, 5, String::new()).await;
    cache.settle().await;
    let left = cache.ttl(&key).await.unwrap().expect("cached");
    assert!(
        left > std::time::Duration::from_secs(59) && left <= std::time::Duration::from_secs(60)
    );
    let refusing = cached_redis_tests::RefusingPort::new();
    let down = Cache::builder(&refusing.url()).build().await.unwrap();
    assert!(down.ping().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_wakes_the_waiters_of_the_leases_it_removes() {
    let server = RedisServer::start();
    let cache = server.cache("clear-wake").await;
    let key = cached_redis::Key::raw("held:1");
    // Another process holds the lease for the full default lock_ttl of 5 s.
    let lease = format!("{}:lease", cache.redis_key(&key));
    let mut conn = server.conn().await;
    let _: () = redis::cmd("SET")
        .arg(&lease)
        .arg("other")
        .arg("PX")
        .arg(5000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let waiter = {
        let (cache, key) = (cache.clone(), key.clone());
        tokio::spawn(async move {
            let policy =
                cached_redis::Policy::new("held", std::time::Duration::from_secs(60)).unwrap();
            let started = std::time::Instant::now();
            let value: Result<u32, String> = cache.fetch(&key, &policy, async { Ok(1) }).await;
            (value, started.elapsed())
        })
    };
    assert!(
        cached_redis_tests::eventually(std::time::Duration::from_secs(2), || async {
            cache.stats().lock_waits == 1
        })
        .await
    );
    // The lease; and the woken waiter's own value, if it stored it before clear's second pass.
    let removed = cache.clear().await.unwrap();
    assert!((1..=2).contains(&removed), "the lease: {removed}");
    let (value, waited) = waiter.await.unwrap();
    assert_eq!(value, Ok(1));
    assert!(
        waited < std::time::Duration::from_secs(1),
        "woken by clear, not by the lease expiring: {waited:?}"
    );
}

/// `<fn>_key` names the entry the function caches under for the same arguments: for a
/// template, a derived key (with its function path, here and in a generic impl), and a method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_helper_names_the_entry_the_function_caches_under() {
    let server = RedisServer::start();
    let cache = server.cache("keys").await;
    let stored = |key: cached_redis::Key| {
        let (cache, conn) = (cache.clone(), server.conn());
        async move {
            get_raw(&mut conn.await, &cache.redis_key(&key))
                .await
                .is_some()
        }
    };
    pair(&cache, "x:y", "z").await.unwrap();
    cache.settle().await;
    assert_eq!(pair_key("x:y", "z").as_str(), r"pair:x\:y:z");
    assert!(stored(pair_key("x:y", "z")).await);
    derived(&cache, 7, "abc".into()).await;
    cache.settle().await;
    assert_eq!(
        derived_key(7, "abc".into()).as_str(),
        "attribute::derived:7:abc"
    );
    assert!(stored(derived_key(7, "abc".into())).await);
    Posts::<u16>::by_id(&cache, 1).await;
    cache.settle().await;
    assert!(stored(Posts::<u16>::by_id_key(1)).await);
    assert!(
        !stored(Posts::<u8>::by_id_key(1)).await,
        "its own type's entry"
    );
    let dir = Directory {
        cache: cache.clone(),
        tenant: "acme".into(),
        loads: AtomicU32::new(0),
    };
    let ada = User {
        id: 1,
        name: "Ada".into(),
    };
    dir.display_name(&ada).await;
    cache.settle().await;
    assert_eq!(dir.display_name_key(&ada).as_str(), "name:acme:1");
    assert!(
        cache
            .ttl(&dir.display_name_key(&ada))
            .await
            .unwrap()
            .is_some()
    );
}

/// Foreign id and date types are key parts behind cached-redis's `uuid`, `chrono` and `time`
/// features, rendered by their `Display` and escaped like any other part.
#[redis_cached(key = "booking:<id>:<day>:<at>", ttl = "60s", cache = cache)]
async fn booking(
    cache: &Cache,
    id: uuid::Uuid,
    day: chrono::NaiveDate,
    at: time::Time,
) -> Result<String, String> {
    Ok(format!("{id} {day} {at}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uuids_and_dates_are_key_parts() {
    let server = RedisServer::start();
    let cache = server.cache("foreign").await;
    let id = uuid::Uuid::from_u128(0x67e5_5044_10b1_426f_9247_bb68_0e5f_e0c8);
    let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    let at = time::Time::from_hms(9, 30, 0).unwrap();
    let first = booking(&cache, id, day, at).await.unwrap();
    cache.settle().await;
    assert_eq!(booking(&cache, id, day, at).await.unwrap(), first);
    assert_eq!(cache.stats().hits, 1);
    assert_eq!(
        booking_key(id, day, at).as_str(),
        r"booking:67e55044-10b1-426f-9247-bb680e5fe0c8:2026-12-01:9\:30\:00.0"
    );
}

#[redis_cached(key = "at:<chrono_at>:<time_at>", ttl = "60s", cache = cache)]
async fn at(
    cache: &Cache,
    chrono_at: chrono::DateTime<chrono::FixedOffset>,
    time_at: time::OffsetDateTime,
) -> u32 {
    let _ = (chrono_at, time_at);
    1
}

/// Instants with an offset are keyed in UTC: the same instant written in two offsets (equal
/// values) is one key, so an invalidation that names it in either removes the entry.
#[test]
fn equal_instants_in_other_offsets_are_one_key() {
    use chrono::TimeZone as _;
    let naive = chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap();
    let utc = chrono::FixedOffset::east_opt(0)
        .unwrap()
        .from_utc_datetime(&naive);
    let plus_two = chrono::FixedOffset::east_opt(7200)
        .unwrap()
        .from_utc_datetime(&naive);
    assert_eq!(utc, plus_two, "chrono: one instant");
    let date = time::Date::from_calendar_date(2026, time::Month::December, 1).unwrap();
    let ten = time::PrimitiveDateTime::new(date, time::Time::from_hms(10, 0, 0).unwrap());
    let time_utc = ten.assume_utc();
    let time_plus_two = time_utc.to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
    assert_eq!(time_utc, time_plus_two, "time: one instant");
    assert_eq!(at_key(utc, time_utc), at_key(plus_two, time_plus_two));
    assert_eq!(
        at_key(utc, time_utc).as_str(),
        r"at:2026-12-01 10\:00\:00 UTC:2026-12-01 10\:00\:00.0Z"
    );
}

static LIST_LOADS: AtomicU32 = AtomicU32::new(0);

/// Pages past the end are empty: not worth storing.
#[redis_cached(key = "page:<page>", ttl = "60s", cache = cache, cache_if = |rows: &Vec<u32>| !rows.is_empty())]
async fn page(cache: &Cache, page: u32) -> Result<Vec<u32>, String> {
    LIST_LOADS.fetch_add(1, Ordering::SeqCst);
    Ok(if page < 2 {
        vec![page * 10, page * 10 + 1]
    } else {
        Vec::new()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_if_skips_storing_values_it_rejects() {
    let server = RedisServer::start();
    let cache = server.cache("cache-if").await;
    for _ in 0..2 {
        assert_eq!(page(&cache, 1).await.unwrap(), [10, 11]);
        assert_eq!(page(&cache, 5).await.unwrap(), Vec::<u32>::new());
    }
    assert_eq!(
        LIST_LOADS.load(Ordering::SeqCst),
        3,
        "the empty page loads every time"
    );
    cache.settle().await;
    assert_eq!(scan(&server, "cache-if:*").await, ["cache-if:{page:1}"]);
}

/// A repository whose cached method takes `&mut self`.
struct Tally {
    cache: Cache,
    loads: u32,
}

impl Tally {
    #[redis_cached(key = "tally:<id>", ttl = "60s", cache = &self.cache)]
    async fn get(&mut self, id: u32) -> Result<u32, String> {
        self.loads += 1;
        Ok(id * 100)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mut_self_method_is_cached() {
    let server = RedisServer::start();
    let mut tally = Tally {
        cache: server.cache("mut-self").await,
        loads: 0,
    };
    assert_eq!(tally.get(3).await, Ok(300));
    assert_eq!(tally.get(3).await, Ok(300));
    assert_eq!(tally.loads, 1, "the second call is a hit");
    assert!(tally.invalidate_get(3).await.unwrap());
}

static FORMS_LOADS: AtomicU32 = AtomicU32::new(0);

/// Computed parts, lists, `:display`, a raw-named argument and a type parameter.
#[redis_cached(
    key = "forms:<email.to_lowercase()>:<ids>:<addr:display>:<type>:<T>",
    ttl = "60s",
    cache = cache
)]
async fn forms<T: Default + Serialize + serde::de::DeserializeOwned>(
    cache: &Cache,
    email: &str,
    ids: &[u32],
    addr: std::net::Ipv4Addr,
    r#type: &str,
) -> Result<T, String> {
    FORMS_LOADS.fetch_add(1, Ordering::SeqCst);
    let _ = (email, ids, addr, r#type);
    Ok(T::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computed_parts_lists_display_raw_names_and_type_parameters_render_readably() {
    let server = RedisServer::start();
    let cache = server.cache("forms").await;
    let localhost = std::net::Ipv4Addr::LOCALHOST;
    forms::<u32>(&cache, "Ada@Example.com", &[1, 2], localhost, "a:b")
        .await
        .unwrap();
    forms::<u32>(&cache, "ada@example.com", &[1, 2], localhost, "a:b")
        .await
        .unwrap();
    assert_eq!(
        FORMS_LOADS.load(Ordering::SeqCst),
        1,
        "one email, whatever its case"
    );
    forms::<String>(&cache, "ada@example.com", &[1, 2], localhost, "a:b")
        .await
        .unwrap();
    forms::<u32>(&cache, "ada@example.com", &[12], localhost, "a:b")
        .await
        .unwrap();
    forms::<u32>(&cache, "ada@example.com", &[], localhost, "a:b")
        .await
        .unwrap();
    assert_eq!(
        FORMS_LOADS.load(Ordering::SeqCst),
        4,
        "other types and lists load"
    );
    cache.settle().await;
    let mut keys = scan(&server, "forms:*").await;
    keys.sort();
    assert_eq!(
        keys,
        [
            r"forms:{forms:ada@example.com:1,2:127.0.0.1:a\:b:alloc\:\:string\:\:String}",
            r"forms:{forms:ada@example.com:1,2:127.0.0.1:a\:b:u32}",
            r"forms:{forms:ada@example.com:12:127.0.0.1:a\:b:u32}",
            r"forms:{forms:ada@example.com:\e:127.0.0.1:a\:b:u32}",
        ]
    );
}

static CONFIGURED_LOADS: AtomicU32 = AtomicU32::new(0);

/// A TTL from configuration, read once.
fn configured_ttl() -> std::time::Duration {
    std::time::Duration::from_secs(
        std::env::var("NO_SUCH_TTL_VAR").map_or(90, |v| v.parse().unwrap()),
    )
}

#[redis_cached(key = "configured:<id>", ttl = configured_ttl(), jitter = "10%", cache = cache)]
async fn configured(cache: &Cache, id: u32) -> Result<u32, String> {
    CONFIGURED_LOADS.fetch_add(1, Ordering::SeqCst);
    Ok(id)
}

const NO_TTL: std::time::Duration = std::time::Duration::ZERO;
static UNCACHED_LOADS: AtomicU32 = AtomicU32::new(0);

#[redis_cached(key = "misconfigured:<id>", ttl = NO_TTL, cache = cache)]
async fn misconfigured(cache: &Cache, id: u32) -> Result<u32, String> {
    UNCACHED_LOADS.fetch_add(1, Ordering::SeqCst);
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_expression_is_computed_once_and_checked_at_the_first_call() {
    let server = RedisServer::start();
    let cache = server.cache("ttl-expr").await;
    let logs = cached_redis_tests::capture_logs(tracing::Level::WARN);
    assert_eq!(configured(&cache, 1).await, Ok(1));
    assert_eq!(configured(&cache, 1).await, Ok(1));
    assert_eq!(CONFIGURED_LOADS.load(Ordering::SeqCst), 1);
    let mut conn = server.conn().await;
    let left = cached_redis_tests::pttl(&mut conn, "ttl-expr:{configured:1}").await;
    assert!(
        (81_000..=90_000).contains(&left),
        "90 s less up to 10%: {left} ms"
    );

    for _ in 0..3 {
        assert_eq!(
            misconfigured(&cache, 2).await,
            Ok(2),
            "the loader still answers"
        );
    }
    assert_eq!(UNCACHED_LOADS.load(Ordering::SeqCst), 3, "uncached");
    let text = logs.text();
    let errors = text
        .lines()
        .filter(|l| l.contains("`ttl` is invalid"))
        .count();
    assert_eq!(errors, 1, "said once, with what is wrong:\n{text}");
    assert!(text.contains("misconfigured"), "{text}");
}
