//! The service a [`CacheLayer`] wraps around a handler: look the request up, run the handler
//! through the cache's engine on a miss, answer with `X-Cache`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::http::header::{ETAG, HeaderValue};
use ::http::{HeaderMap, HeaderName, Request, Response};
use bytes::Bytes;
use http_body::Body;
use tower_service::Service;

use super::body::{self, Buffered, CacheBody};
use super::conditional::{self, Conditions};
use super::entry::{HttpEntry, Lifetime, Loaded, StoredResponse};
use super::rules::{self, Vary, Verdict};
use super::{CacheLayer, Config, key, writes};
use crate::Key;

/// The [`CacheLayer`]'s service around `S`.
///
/// ```no_run
/// use std::time::Duration;
/// use cached_redis::http::{CacheLayer, CacheService};
/// use tower_layer::Layer as _;
///
/// # fn demo<S>(cache: cached_redis::Cache, handler: S) {
/// let service: CacheService<S> = CacheLayer::new(cache, Duration::from_secs(30)).layer(handler);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CacheService<S> {
    inner: S,
    layer: CacheLayer,
}

impl<S> CacheService<S> {
    pub(crate) fn new(inner: S, layer: CacheLayer) -> CacheService<S> {
        CacheService { inner, layer }
    }
}

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

type Answer<B, E> = Result<Response<CacheBody<B>>, E>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for CacheService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqB: Body + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Send + 'static,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Answer<ResB, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // The service made ready takes the request; its clone waits for the next one.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(respond(self.layer.clone(), inner, request))
    }
}

/// One request through the layer.
async fn respond<S, ReqB, ResB>(
    layer: CacheLayer,
    inner: S,
    request: Request<ReqB>,
) -> Answer<ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body,
    ResB: Body<Data = Bytes>,
{
    let (mut parts, body) = request.into_parts();
    if layer.config.invalidate_writes && writes::is_unsafe(&parts.method) {
        return written(&layer, inner, parts, body).await;
    }
    // A handler may read a `GET`'s body, which is not in the key: only requests without one
    // are cached (HTTP/2 needs no `Content-Length` to send one).
    let bodiless = body.is_end_stream() || body.size_hint().exact() == Some(0);
    let base = rules::request_key(&parts, &layer.config).filter(|_| bodiless);
    let Some(base) = base else {
        let request = Request::from_parts(parts, body);
        return Run::new(inner, request, Conditions::default())
            .pass_through()
            .await;
    };
    // The handler answers in full when the layer asks it; the conditions apply to the answer.
    let conditions = Conditions::take(&mut parts.headers);
    let mut run = Run::new(inner, Request::from_parts(parts, body), conditions);
    if layer.uncacheable.holds(&base) {
        return run.pass_through().await.map(missed);
    }
    let entry = run.fetch(&layer, &base, None).await;
    if let Some(own) = run.own_answer() {
        return own;
    }
    let names = match entry {
        Some(HttpEntry::Response(stored)) => return run.hit(stored, &base).await,
        Some(HttpEntry::Vary(names)) => names,
        None => return run.pass_through().await,
    };
    // The URL varies on request headers: this variant has a key of its own.
    let Some(names) = header_names(&names) else {
        return run.pass_through().await;
    };
    let varied = key::varied(&base, &names, run.request_headers());
    if layer.uncacheable.holds(&varied) {
        return run.pass_through().await.map(missed);
    }
    let entry = run.fetch(&layer, &varied, Some(names)).await;
    if let Some(own) = run.own_answer() {
        return own;
    }
    match entry {
        Some(HttpEntry::Response(stored)) => run.hit(stored, &varied).await,
        _ => run.pass_through().await,
    }
}

/// An unsafe request: the handler's answer, after what it invalidates is removed (so a read
/// that starts once the answer is out never gets what was stored before the write), or after
/// `op_timeout` when Redis does not answer in time.
async fn written<S, ReqB, ResB>(
    layer: &CacheLayer,
    inner: S,
    parts: ::http::request::Parts,
    body: ReqB,
) -> Answer<ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
{
    let request = writes::Request::of(&parts);
    let handler = Run::new(
        inner,
        Request::from_parts(parts, body),
        Conditions::default(),
    );
    let answer = handler.pass_through().await;
    if let Ok(response) = &answer {
        let targets = writes::targets(&request, response.status(), response.headers());
        if !targets.is_empty() {
            writes::remove_targets(&layer.cache, targets).await;
        }
    }
    answer
}

/// The handler and its request, until it runs, and what it answered.
struct Run<S, ReqB, ResB: Body, E> {
    handler: Option<(S, Request<ReqB>)>,
    own: Option<Answer<ResB, E>>,
    /// The handler's failure (an error, or a server error status), when a stored response
    /// answered in its place: this request's answer if that response cannot be replayed.
    failure: Option<Answer<ResB, E>>,
    /// The handler ran and failed.
    failed: bool,
    /// The handler's response was not stored (its caller's only, or shared and dropped).
    unstored: bool,
    /// The request's validators, taken off it: the answer the layer gives is checked
    /// against them; a request the handler answers itself gets them back.
    conditions: Conditions,
}

impl<S, ReqB, ResB> Run<S, ReqB, ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
{
    fn new(inner: S, request: Request<ReqB>, conditions: Conditions) -> Self {
        Run {
            handler: Some((inner, request)),
            own: None,
            failure: None,
            failed: false,
            unstored: false,
            conditions,
        }
    }

    /// What the handler answered when the layer ran it, as this request's answer (a `304`
    /// where its validators match).
    fn own_answer(&mut self) -> Option<Answer<ResB, S::Error>> {
        let own = self.own.take()?;
        let empty = || CacheBody::full(Bytes::new());
        Some(own.map(|response| self.conditions.answer(response, empty)))
    }

    fn request_headers(&self) -> &HeaderMap {
        let (_, request) = self.handler.as_ref().expect("the handler has not run");
        request.headers()
    }

    /// The entry at `key`, through the engine: the handler runs (at most once per run) if the
    /// engine asks for a load, and its answer goes to `own`.
    async fn fetch(
        &mut self,
        layer: &CacheLayer,
        key: &str,
        vary: Option<Vec<HeaderName>>,
    ) -> Option<HttpEntry> {
        let config = &layer.config;
        let load = self.load(config, vary, key);
        let loaded = layer
            .cache
            .fetch(&Key::raw(key), &config.policy, load)
            .await;
        if self.unstored {
            layer.uncacheable.remember(key, config.policy.ttl());
        }
        // A stored response answered in place of the handler's failure (`stale-if-error`).
        if matches!(loaded, Loaded::Cached(_)) && self.failed {
            self.failure = self.own.take();
        }
        match loaded {
            Loaded::Cached(entry) | Loaded::Share(entry) | Loaded::Store(entry, _) => Some(entry),
            Loaded::Alone | Loaded::Failed | Loaded::Errored => None,
        }
    }

    /// Runs the handler and reads its body; `vary`: the headers the key was varied on.
    async fn load(&mut self, config: &Config, vary: Option<Vec<HeaderName>>, key: &str) -> Loaded {
        let Some((mut inner, request)) = self.handler.take() else {
            return Loaded::Alone;
        };
        let head = request.method() == ::http::Method::HEAD;
        let (parts, body) = match inner.call(request).await {
            Ok(response) => response.into_parts(),
            Err(error) => {
                self.own = Some(Err(error));
                self.failed = true;
                return Loaded::Failed;
            }
        };
        // What its head already says is not stored is not read first: it streams.
        let verdict = rules::verdict(&parts, config);
        if rules::streams_through(&parts, &verdict) {
            let error = verdict == Verdict::Error;
            (self.unstored, self.failed) = (!error, error);
            let body = CacheBody::streaming(body);
            self.own = Some(Ok(missed(Response::from_parts(parts, body))));
            return if error {
                Loaded::Errored
            } else {
                Loaded::Alone
            };
        }
        let mut parts = parts;
        let bytes = match body::buffer(body, config.max_body).await {
            Buffered::Whole(bytes) => bytes,
            Buffered::Passed(body) => {
                self.unstored = true;
                self.own = Some(Ok(missed(Response::from_parts(parts, body))));
                return Loaded::Alone;
            }
        };
        // A `HEAD` whose body a router outside the layer stripped is not tagged: the empty
        // body's tag would not be its `GET`'s.
        let tag = config.etag && !(head && bytes.is_empty());
        let stored = matches!(verdict, Verdict::Store { .. });
        if tag && stored && !parts.headers.contains_key(ETAG) {
            parts.headers.insert(ETAG, conditional::etag_of(&bytes));
        }
        let loaded = classify(&parts, &bytes, verdict, (vary, key));
        self.unstored = matches!(loaded, Loaded::Alone | Loaded::Share(_));
        self.own = Some(Ok(missed(Response::from_parts(
            parts,
            CacheBody::full(bytes),
        ))));
        loaded
    }

    /// The response stored at `key`, replayed; the handler if it does not decode as one, was
    /// stored under another key (copied there by someone with write access to Redis), or is
    /// one the layer would not have stored.
    async fn hit(mut self, stored: StoredResponse, key: &str) -> Answer<ResB, S::Error> {
        let label = if stored.is_stale() { "STALE" } else { "HIT" };
        let replay = stored
            .replay(key)
            .filter(|(parts, _)| rules::may_replay(&parts.headers));
        match replay {
            Some((mut parts, bytes)) => {
                parts
                    .headers
                    .insert(X_CACHE, HeaderValue::from_static(label));
                let response = Response::from_parts(parts, CacheBody::full(bytes));
                let empty = || CacheBody::full(Bytes::new());
                Ok(self.conditions.answer(response, empty))
            }
            None => match self.failure.take() {
                Some(failure) => failure,
                None => self.pass_through().await,
            },
        }
    }

    /// The handler's answer to the request as it came (its validators put back), untouched;
    /// if it already ran and failed (a stored response answered in its place, and turned out
    /// to be no answer at all), that failure.
    async fn pass_through(mut self) -> Answer<ResB, S::Error> {
        if let Some(failure) = self.failure.take() {
            return failure;
        }
        let (mut inner, mut request) = self.handler.take().expect("the handler has not run");
        std::mem::take(&mut self.conditions).restore(request.headers_mut());
        Ok(inner.call(request).await?.map(CacheBody::streaming))
    }
}

/// What becomes of a response read whole, with its head's `verdict`, in a run for `key`, varied
/// on `vary` (`None`: the URL's own key).
fn classify(
    parts: &::http::response::Parts,
    bytes: &Bytes,
    verdict: Verdict,
    (vary, key): (Option<Vec<HeaderName>>, &str),
) -> Loaded {
    let Vary::Names(names) = rules::vary(&parts.headers) else {
        return Loaded::Alone;
    };
    match (verdict, vary) {
        (Verdict::Alone, _) => Loaded::Alone,
        (Verdict::Error, _) => Loaded::Errored,
        // A response that varies, at the URL's own key: the key records the names, and each
        // variant is stored apart from the next request on (this one is its caller's). The
        // record lasts as long as the variant may answer, stale too.
        (Verdict::Store { ttl, windows, .. }, None) if !names.is_empty() => {
            let names = names.iter().map(|n| n.as_str().to_owned()).collect();
            let longer = windows.0.max(windows.1).unwrap_or_default();
            Loaded::Store(HttpEntry::Vary(names), ttl.saturating_add(longer))
        }
        (Verdict::Share, None) if !names.is_empty() => Loaded::Alone,
        // It varies on other headers than the key was made for (a deploy changed them).
        (_, Some(expected)) if expected != names => Loaded::Alone,
        (Verdict::Store { ttl, age, windows }, _) => {
            let lifetime = Lifetime { ttl, age, windows };
            let stored = StoredResponse::capture(parts, bytes, lifetime, key);
            Loaded::Store(HttpEntry::Response(stored), ttl)
        }
        (Verdict::Share, _) => {
            let lifetime = Lifetime {
                ttl: std::time::Duration::ZERO,
                age: std::time::Duration::ZERO,
                windows: (None, None),
            };
            let shared = StoredResponse::capture(parts, bytes, lifetime, key);
            Loaded::Share(HttpEntry::Response(shared))
        }
    }
}

fn missed<B: Body>(mut response: Response<CacheBody<B>>) -> Response<CacheBody<B>> {
    let headers = response.headers_mut();
    headers.insert(X_CACHE, HeaderValue::from_static("MISS"));
    response
}

/// The names a stored `Vary` entry holds, if they are all header names.
fn header_names(names: &[String]) -> Option<Vec<HeaderName>> {
    names
        .iter()
        .map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect()
}
