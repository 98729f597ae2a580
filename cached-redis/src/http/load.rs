//! One run of the handler for the engine: its response, read whole when it may be stored, and
//! what becomes of it ([`Loaded`]). The run owns what it needs, so that the engine can run it
//! in a task of its own (a `stale-while-revalidate` refresh, whose request is answered stale
//! at once); what it answered is left in a [`Slot`] for the request it was made for.

use std::sync::{Arc, Mutex, MutexGuard};

use ::http::header::ETAG;
use ::http::{HeaderName, Request, Response};
use bytes::Bytes;
use http_body::Body;
use tokio::sync::Notify;
use tower_service::Service;

use super::body::{self, Buffered, CacheBody};
use super::entry::{HttpEntry, Lifetime, Loaded, StoredResponse};
use super::rules::{self, Vary, Verdict};
use super::{CacheLayer, Config, conditional, upkeep};

/// A response through the layer, or the handler's error.
pub(crate) type Answer<B, E> = Result<Response<CacheBody<B>>, E>;

/// The handler and its request until a run takes them, then what the run answered.
pub(crate) struct Slot<S, ReqB, ResB: Body, E> {
    pub(crate) handler: Option<(S, Request<ReqB>)>,
    pub(crate) own: Option<Answer<ResB, E>>,
    /// The run failed: its service's error, or a server error status.
    pub(crate) failed: bool,
    /// The run is over, answered or dropped.
    finished: bool,
}

/// A [`Slot`], shared by a request and the run made for it.
pub(crate) struct Shared<S, ReqB, ResB: Body, E> {
    slot: Mutex<Slot<S, ReqB, ResB, E>>,
    finished: Notify,
}

impl<S, ReqB, ResB: Body, E> Shared<S, ReqB, ResB, E> {
    pub(crate) fn new(handler: S, request: Request<ReqB>) -> Arc<Self> {
        Arc::new(Shared {
            slot: Mutex::new(Slot {
                handler: Some((handler, request)),
                own: None,
                failed: false,
                finished: false,
            }),
            finished: Notify::new(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Slot<S, ReqB, ResB, E>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the run answered, once it is over (`None`: it was dropped unanswered, past
    /// `max_load`).
    pub(crate) async fn answered(&self) -> Option<Answer<ResB, E>> {
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            {
                let mut slot = self.lock();
                if slot.finished || slot.own.is_some() {
                    return slot.own.take();
                }
            }
            finished.await;
        }
    }
}

/// Marks the run over when it ends, answered or dropped.
struct Over<S, ReqB, ResB: Body, E>(Arc<Shared<S, ReqB, ResB, E>>);

impl<S, ReqB, ResB: Body, E> Drop for Over<S, ReqB, ResB, E> {
    fn drop(&mut self) {
        self.0.lock().finished = true;
        self.0.finished.notify_waiters();
    }
}

/// The engine's loader for `key` (varied on `vary`: `None` for the URL's own key, `base`):
/// runs the handler from `shared` if no run has taken it yet (if one has, and failed, this load
/// fails too: a stored response may answer for it), and leaves its answer there. An answer that
/// is not stored removes what was stored at `key` (a refresh whose answer is now a `404` or
/// `private` ends the stale one), and sends the URL's next requests in this process straight
/// to the handler for a while; one that varies on other headers than the URL's `Vary` record
/// says (a deploy changed them) removes the record too, for the next request to make anew.
pub(crate) async fn loader<S, ReqB, ResB>(
    shared: Arc<Shared<S, ReqB, ResB, S::Error>>,
    layer: CacheLayer,
    vary: Option<Vec<HeaderName>>,
    (key, base): (String, String),
) -> Loaded
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
{
    let taken = shared.lock().handler.take();
    let Some((inner, request)) = taken else {
        return match shared.lock().failed {
            true => Loaded::Failed,
            false => Loaded::Alone,
        };
    };
    let over = Over(shared);
    let (loaded, own, revaried) = run(inner, request, &layer.config, (vary.clone(), &key)).await;
    let unstored = matches!(loaded, Loaded::Alone | Loaded::Share(_));
    {
        let mut slot = over.0.lock();
        slot.failed = matches!(loaded, Loaded::Failed | Loaded::Errored);
        slot.own = Some(own);
    }
    if unstored {
        layer.uncacheable.remember(&key, layer.config.policy.ttl());
        let keys = if revaried { vec![key, base] } else { vec![key] };
        upkeep::remove(&layer.cache, keys);
    } else if let (Some(names), Loaded::Store(variant, ttl)) = (vary, &loaded) {
        // A variant stored: its URL's record lasts at least as long.
        let policy = &layer.config.policy;
        let kept = policy.for_entry(Some(variant.windows())).kept_ms();
        let lifetime = ttl.saturating_add(std::time::Duration::from_millis(kept));
        let names = names.iter().map(|n| n.as_str().to_owned()).collect();
        upkeep::extend_record(&layer.cache, policy, &base, names, lifetime);
    }
    loaded
}

/// Runs the handler, and reads its body when it may be stored.
async fn run<S, ReqB, ResB>(
    mut inner: S,
    request: Request<ReqB>,
    config: &Config,
    (vary, key): (Option<Vec<HeaderName>>, &str),
) -> (Loaded, Answer<ResB, S::Error>, bool)
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
{
    let head = request.method() == ::http::Method::HEAD;
    let (mut parts, body) = match inner.call(request).await {
        Ok(response) => response.into_parts(),
        Err(error) => return (Loaded::Failed, Err(error), false),
    };
    // A variant's response the layer would store, but varying on other headers than its
    // URL's record says (a deploy changed them). One it would not store (a `406` for an
    // `Accept` it refuses, without a `Vary`) says nothing of the URL's variants.
    let verdict = rules::verdict(&parts, config);
    let revaried = matches!(verdict, Verdict::Store { .. })
        && vary
            .as_ref()
            .is_some_and(|expected| rules::vary(&parts.headers) != Vary::Names(expected.clone()));
    // What its head already says is not stored is not read first: it streams.
    if rules::streams_through(&parts, &verdict) {
        let loaded = match verdict {
            Verdict::Error => Loaded::Errored,
            _ => Loaded::Alone,
        };
        let body = CacheBody::streaming(body);
        return (
            loaded,
            Ok(missed(Response::from_parts(parts, body))),
            revaried,
        );
    }
    let bytes = match body::buffer(body, config.max_body).await {
        Buffered::Whole(bytes) => bytes,
        Buffered::Passed(body) => {
            let own = Ok(missed(Response::from_parts(parts, body)));
            return (Loaded::Alone, own, revaried);
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
    let own = Response::from_parts(parts, CacheBody::full(bytes));
    (loaded, Ok(missed(own)), revaried)
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
        // record lasts as long as the response may answer, stale too (whichever process made
        // it), and each variant stored later extends it to its own life (`record.rs`). A
        // variant whose response varies otherwise removes it.
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

/// The `X-Cache` header.
pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// A response the handler gave this time: `X-Cache: MISS`.
pub(crate) fn missed<B: Body>(mut response: Response<CacheBody<B>>) -> Response<CacheBody<B>> {
    let value = ::http::HeaderValue::from_static("MISS");
    response.headers_mut().insert(X_CACHE, value);
    response
}
