//! The service a [`CacheLayer`] wraps around a handler: look the request up, run the handler
//! through the cache's engine on a miss, answer with `X-Cache`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::http::{HeaderName, Request, Response};
use bytes::Bytes;
use http_body::Body;
use tower_service::Service;

use super::body::CacheBody;
use super::conditional::Conditions;
use super::entry::HttpEntry;
use super::load::{Answer, missed};
use super::run::Run;
use super::{CacheLayer, rules, writes};

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
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqB: Body + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Send + 'static,
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
    let entry = run.fetch(&layer, (&base, &base), None).await;
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
    let varied = run.varied(&base, &names);
    if layer.uncacheable.holds(&varied) {
        return run.pass_through().await.map(missed);
    }
    let entry = run.fetch(&layer, (&varied, &base), Some(names)).await;
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
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqB: Body + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Send + 'static,
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

/// The names a stored `Vary` entry holds, if they are all header names.
fn header_names(names: &[String]) -> Option<Vec<HeaderName>> {
    names
        .iter()
        .map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect()
}
