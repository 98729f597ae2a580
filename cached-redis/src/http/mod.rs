//! Whole-response caching for tower and axum services (feature `http`): [`CacheLayer`].
//!
//! The layer answers a `GET` or `HEAD` from Redis when it can, and otherwise runs the handler
//! through the same engine as `#[redis_cached]`: one handler execution per cold URL across every
//! process (a lease, waiters woken on the store), the handler answering when Redis is down, the
//! breaker, the counters and the spans. Only what cannot leak between users is stored.
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use cached_redis::http::CacheLayer;
//!
//! # async fn demo(cache: cached_redis::Cache) {
//! async fn list_products() -> &'static str {
//!     "[]"
//! }
//!
//! let app: Router = Router::new()
//!     .route("/products", get(list_products))
//!     .layer(CacheLayer::new(cache.clone(), Duration::from_secs(30)));
//! # }
//! ```

mod body;
mod conditional;
mod credentials;
mod directives;
mod entry;
mod freshness;
mod host;
mod key;
mod load;
mod rules;
mod run;
mod service;
mod uncacheable;
mod upkeep;
mod writes;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::http::StatusCode;
use ::http::request::Parts;

pub use body::CacheBody;
pub use service::CacheService;

use crate::policy::PerEntry;
use crate::{Cache, Error, Policy};

/// The default bound on a response body the layer buffers to store: 1 MiB.
///
/// ```
/// # let cache = cached_redis::Cache::disabled();
/// use cached_redis::http::{CacheLayer, DEFAULT_MAX_BODY};
///
/// let layer = CacheLayer::new(cache, std::time::Duration::from_secs(30)).max_body(4 * DEFAULT_MAX_BODY);
/// ```
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// A [`tower_layer::Layer`] that caches whole responses in Redis: `GET` and `HEAD`, keyed by
/// method, path and query (parameters in canonical order), every host the request names
/// (`Host`, `X-Forwarded-Host`, `Forwarded`'s `host`, ...), the user
/// [`CacheLayer::key_by_user`] names and the request headers a response's `Vary` names, as
/// `<namespace>:{http:GET:/products?page=2|host=shop.example.com}`.
///
/// Stored: responses with a status in [`CacheLayer::statuses`] (200 by default), a body within
/// [`CacheLayer::max_body`], no `Set-Cookie`, no `Cache-Control: private`, `no-store` or
/// `no-cache` (nor `Pragma: no-cache`), no `Vary: *`, and freshness left, for the layer's TTL
/// or what the response allows when shorter (`s-maxage`, `max-age` or `Expires`, less its
/// `Age`). A header the decision depends on that cannot be read (not text, not a number, not
/// a date) means: not stored. Requests with `Authorization` or `Cookie` go straight to the
/// handler unless [`CacheLayer::key_by_user`] says whose they are. Answers carry
/// `X-Cache: HIT` (with `Age`) or `X-Cache: MISS`; requests the layer does not cache carry
/// neither.
///
/// ```no_run
/// use std::time::Duration;
/// use cached_redis::http::CacheLayer;
///
/// # fn demo(cache: cached_redis::Cache) {
/// let layer = CacheLayer::new(cache, Duration::from_secs(30))
///     .name("products")
///     .max_body(256 * 1024)
///     .statuses(&[http::StatusCode::OK, http::StatusCode::NOT_FOUND]);
/// # }
/// ```
#[derive(Clone)]
pub struct CacheLayer {
    pub(crate) cache: Cache,
    pub(crate) config: Arc<Config>,
    /// Shared by every clone of the layer and every service it wraps.
    pub(crate) uncacheable: Arc<uncacheable::Uncacheable>,
}

/// What decides what is stored, shared by every service the layer wraps.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) policy: Policy,
    pub(crate) statuses: Vec<StatusCode>,
    pub(crate) max_body: usize,
    pub(crate) user: Option<UserKey>,
    /// Request headers treated as credentials besides the built-in ones.
    pub(crate) credentials: Vec<::http::HeaderName>,
    /// Whether a successful unsafe request removes what is stored for its URL.
    pub(crate) invalidate_writes: bool,
    /// Whether a stored response without an `ETag` is given one.
    pub(crate) etag: bool,
    /// Whether a stored response answers past its freshness as its `stale-while-revalidate`
    /// and `stale-if-error` allow.
    pub(crate) stale: bool,
}

/// Says whose a request with credentials is (`None`: do not cache it).
pub(crate) type UserKey = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("cache", &self.cache)
            .field("name", &self.config.policy.name())
            .field("ttl", &self.config.policy.ttl())
            .field("statuses", &self.config.statuses)
            .field("max_body", &self.config.max_body)
            .field("keyed_by_user", &self.config.user.is_some())
            .field("credential_headers", &self.config.credentials)
            .field("invalidate_writes", &self.config.invalidate_writes)
            .field("etag", &self.config.etag)
            .field("serve_stale", &self.config.stale)
            .finish()
    }
}

impl CacheLayer {
    /// A layer storing responses in `cache` for `ttl`.
    ///
    /// # Panics
    ///
    /// If `ttl` is zero or longer than a day; [`CacheLayer::try_new`] returns the error instead.
    ///
    /// ```no_run
    /// # fn demo(cache: cached_redis::Cache) {
    /// let layer = cached_redis::http::CacheLayer::new(cache, std::time::Duration::from_secs(30));
    /// # }
    /// ```
    pub fn new(cache: Cache, ttl: Duration) -> CacheLayer {
        match CacheLayer::try_new(cache, ttl) {
            Ok(layer) => layer,
            Err(e) => panic!("CacheLayer::new: {e}"),
        }
    }

    /// [`CacheLayer::new`], with an out-of-range `ttl` an [`Error::InvalidConfig`].
    ///
    /// ```
    /// # fn demo(cache: cached_redis::Cache) {
    /// use std::time::Duration;
    /// assert!(cached_redis::http::CacheLayer::try_new(cache, Duration::ZERO).is_err());
    /// # }
    /// # demo(cached_redis::Cache::disabled());
    /// ```
    pub fn try_new(cache: Cache, ttl: Duration) -> Result<CacheLayer, Error> {
        let mut policy = Policy::new("http", ttl)?;
        // Each response says how long it is fresh, and may answer stale (`serve_stale`).
        policy.freshness.per_entry = PerEntry::Windows;
        let config = Config {
            policy,
            statuses: vec![StatusCode::OK],
            max_body: DEFAULT_MAX_BODY,
            user: None,
            credentials: Vec::new(),
            invalidate_writes: true,
            etag: false,
            stale: true,
        };
        Ok(CacheLayer {
            cache,
            config: Arc::new(config),
            uncacheable: Arc::default(),
        })
    }

    /// The name its calls are counted and traced under (`function` in metrics and spans):
    /// `"http"` unless set.
    ///
    /// ```
    /// # let cache = cached_redis::Cache::disabled();
    /// let layer = cached_redis::http::CacheLayer::new(cache, std::time::Duration::from_secs(5))
    ///     .name("products");
    /// ```
    pub fn name(mut self, name: &'static str) -> CacheLayer {
        let config = Arc::make_mut(&mut self.config);
        config.policy.name = name;
        self
    }

    /// The statuses whose responses are stored (`[200]` unless set). Others are still shared
    /// with requests that waited for the same handler run, unless personal.
    ///
    /// ```
    /// # let cache = cached_redis::Cache::disabled();
    /// let layer = cached_redis::http::CacheLayer::new(cache, std::time::Duration::from_secs(5))
    ///     .statuses(&[http::StatusCode::OK, http::StatusCode::MOVED_PERMANENTLY]);
    /// ```
    pub fn statuses(mut self, statuses: &[StatusCode]) -> CacheLayer {
        Arc::make_mut(&mut self.config).statuses = statuses.to_vec();
        self
    }

    /// The largest body the layer buffers to store (1 MiB unless set); a longer body streams
    /// through to its caller as the handler writes it, and is not stored.
    ///
    /// ```
    /// # let cache = cached_redis::Cache::disabled();
    /// let layer = cached_redis::http::CacheLayer::new(cache, std::time::Duration::from_secs(5))
    ///     .max_body(64 * 1024);
    /// ```
    pub fn max_body(mut self, bytes: usize) -> CacheLayer {
        Arc::make_mut(&mut self.config).max_body = bytes;
        self
    }

    /// Keys every request by its user: `user` says whose a request is (a user id from a
    /// verified session, or the identity header a gateway sets after checking the token), and
    /// is asked on every request, with credentials or without. `Some(user)` joins the key
    /// (`...|user=<it>`); `None` on a request with credentials (`Authorization`, `Cookie`, an
    /// identity header: see [`CacheLayer::credential_headers`]) sends it to the handler
    /// uncached; `None` without them is the shared, anonymous entry. So a user the closure
    /// cannot read (an id that is not UTF-8) is never taken for anonymous, as long as the
    /// header it reads counts as a credential (`X-User-Id` does; name your own). Responses
    /// with `Set-Cookie` or `Cache-Control: private` are never stored either way.
    ///
    /// ```
    /// # let cache = cached_redis::Cache::disabled();
    /// let layer = cached_redis::http::CacheLayer::new(cache, std::time::Duration::from_secs(5))
    ///     .key_by_user(|request| {
    ///         let user = request.headers.get("x-user-id")?; // set by your auth middleware
    ///         user.to_str().ok().map(str::to_owned)
    ///     });
    /// ```
    pub fn key_by_user(
        mut self,
        user: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> CacheLayer {
        Arc::make_mut(&mut self.config).user = Some(Arc::new(user));
        self
    }

    /// Treats requests carrying any of `headers` as personal, like those with
    /// `Authorization` or `Cookie`: cached only when [`CacheLayer::key_by_user`] names the
    /// user. Built in already: `Cookie`, and every header whose name has `auth`, `token`,
    /// `api-key`/`apikey`, `jwt`, `session`, `principal`, `identity`, `oidc`, `saml`,
    /// `credential`, `cert`, `mtls`, `user`, `login`, `claim`, `email`, `secret` or
    /// `password` in it (`User-Agent` and `Sec-Fetch-User` excepted): `Authorization`,
    /// `X-Api-Key`, oauth2-proxy's `X-Forwarded-User`/`-Email`, `X-Auth-Request-*`,
    /// `Remote-User`, `X-User-Id`, AWS ALB's, Google IAP's, Azure's, Cloudflare Access's,
    /// Tailscale's, Pomerium's, forwarded client certificates, ... Name the ones your own
    /// gateway sets that none of those words give away.
    ///
    /// ```
    /// # let cache = cached_redis::Cache::disabled();
    /// let layer = cached_redis::http::CacheLayer::new(cache, std::time::Duration::from_secs(5))
    ///     .credential_headers(&[http::HeaderName::from_static("x-acme-principal")]);
    /// ```
    pub fn credential_headers(mut self, headers: &[::http::HeaderName]) -> CacheLayer {
        let config = Arc::make_mut(&mut self.config);
        config.credentials.extend_from_slice(headers);
        self
    }

    /// Whether a `POST`, `PUT`, `PATCH` or `DELETE` (any method but `GET`, `HEAD`, `OPTIONS`
    /// and `TRACE`) that passes through the layer and is answered with a 2xx or 3xx status
    /// removes the stored responses to its URL, and to the URLs its response's `Location` and
    /// `Content-Location` name on the same host (RFC 9111 §4.4), with every variant, in every
    /// process, before the answer goes out: on by default. The removal finds variants with a
    /// scan of the namespace, as [`CacheLayer::invalidate`] does; a removal Redis does not
    /// take is logged, kept and replayed. Turn it off for a service that invalidates by hand.
    ///
    /// ```
    /// # let cache = cached_redis::Cache::disabled();
    /// let layer = cached_redis::http::CacheLayer::new(cache, std::time::Duration::from_secs(30))
    ///     .invalidate_on_writes(false);
    /// ```
    pub fn invalidate_on_writes(mut self, on: bool) -> CacheLayer {
        Arc::make_mut(&mut self.config).invalidate_writes = on;
        self
    }

    /// Gives each response the layer stores without an `ETag` a strong one (a hash of its
    /// body), so the clients and caches in front of it revalidate with `If-None-Match` and get
    /// a `304` from the layer. Off by default: it adds a header the handler did not write.
    ///
    /// ```
    /// # let cache = cached_redis::Cache::disabled();
    /// let layer = cached_redis::http::CacheLayer::new(cache, std::time::Duration::from_secs(30)).etag();
    /// ```
    pub fn etag(mut self) -> CacheLayer {
        Arc::make_mut(&mut self.config).etag = true;
        self
    }

    /// Whether a stored response answers past its freshness as its own `Cache-Control` allows
    /// (RFC 5861): on by default.
    ///
    /// - `stale-while-revalidate=N`: for `N` seconds past it, requests are answered with it at
    ///   once (`X-Cache: STALE`) while the handler runs once, in one process, in the
    ///   background; its answer replaces the entry.
    /// - `stale-if-error=N`: for `N` seconds past it, a request runs the handler as on a miss
    ///   (one per process; the others wait for it), and if the handler answers `500`, `502`,
    ///   `503` or `504` (a status not in [`CacheLayer::statuses`]) or fails, each is answered
    ///   with the stored response instead, and for a second this process answers the URL with
    ///   it without running the handler.
    ///
    /// Neither applies to a response with `must-revalidate`, `proxy-revalidate` or `s-maxage`
    /// (RFC 9111 §4.2.4), each window is at most a day, and Redis keeps the entry for its
    /// freshness plus the longer window. An invalidated response is removed whole and never
    /// served stale; so is one whose refresh answers with a response the layer does not store.
    /// Off, the layer still serves no entry past its freshness, whoever stored it. A cache
    /// built in memory ([`Cache::in_memory`]) keeps no entry past its freshness.
    ///
    /// ```
    /// # let cache = cached_redis::Cache::disabled();
    /// let layer = cached_redis::http::CacheLayer::new(cache, std::time::Duration::from_secs(30))
    ///     .serve_stale(false);
    /// ```
    pub fn serve_stale(mut self, on: bool) -> CacheLayer {
        let config = Arc::make_mut(&mut self.config);
        config.stale = on;
        // Judged by its own freshness either way: another layer's entry with a window is not
        // fresh here past its freshness.
        config.policy.freshness.per_entry = if on {
            PerEntry::Windows
        } else {
            PerEntry::Expiry
        };
        self
    }

    /// Removes the stored response to `method` `path_and_query` (`"/products?page=2"`, query
    /// parameters in any order), with every variant of it (`Vary`, users), and revokes any
    /// handler run in flight for it. `GET` removes the `HEAD` entries too. Returns whether
    /// anything was removed. Variants are found with a scan of the namespace, as
    /// [`Cache::invalidate_prefix`] does.
    ///
    /// ```no_run
    /// # async fn demo(cache: cached_redis::Cache) -> Result<(), cached_redis::Error> {
    /// cached_redis::http::CacheLayer::invalidate(&cache, "GET", "/products?page=2").await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate(
        cache: &Cache,
        method: &str,
        path_and_query: &str,
    ) -> Result<bool, Error> {
        let (method, uri) = key::parse_request_line(method, path_and_query)?;
        // A `GET`'s entries go with its `HEAD`'s: the same resource.
        if method.as_str().eq_ignore_ascii_case("GET") {
            writes::remove_resource(cache, &uri).await
        } else {
            writes::remove(cache, [method], &uri).await
        }
    }

    /// Removes every stored `GET` and `HEAD` response whose path starts with `path_prefix`
    /// (`"/products"` also matches `/products/7` and `/products-archive`), and returns how many
    /// keys were removed.
    ///
    /// ```no_run
    /// # async fn demo(cache: cached_redis::Cache) -> Result<(), cached_redis::Error> {
    /// let removed = cached_redis::http::CacheLayer::invalidate_prefix(&cache, "/products").await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_prefix(cache: &Cache, path_prefix: &str) -> Result<u64, Error> {
        // Both removals are sent even when one fails (see `invalidate`).
        let mut removed = Ok(0);
        for method in ["GET", "HEAD"] {
            let these = cache
                .invalidate_prefix(&key::path_prefix(method, path_prefix))
                .await;
            removed = match (removed, these) {
                (Ok(total), Ok(these)) => Ok(total + these),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        removed
    }
}

impl<S> tower_layer::Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> CacheService<S> {
        CacheService::new(inner, self.clone())
    }
}
