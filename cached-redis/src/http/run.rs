//! One request the layer caches: the entry at its key through the engine, the handler run
//! (by the engine's loader, [`load`](super::load)) only when the engine asks for a load, and
//! the answer: the stored response replayed (`X-Cache: HIT`, or `STALE` past its freshness),
//! the handler's own, or a `304` where the request's validators match.

use std::sync::Arc;

use ::http::header::HeaderValue;
use ::http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use bytes::Bytes;
use http_body::Body;
use tower_service::Service;

use super::body::CacheBody;
use super::conditional::Conditions;
use super::entry::{HttpEntry, Loaded, StoredResponse};
use super::load::{self, Answer, Shared, X_CACHE};
use super::{CacheLayer, key, rules};
use crate::Key;
use crate::read::detach::Detach;

/// A request, its handler, and what the handler answered once it ran.
pub(crate) struct Run<S, ReqB, ResB: Body, E> {
    shared: Arc<Shared<S, ReqB, ResB, E>>,
    /// The request's headers, for the key of its variant once a run may have taken the
    /// request (a stale `Vary` record refreshed in the background).
    headers: HeaderMap,
    /// The handler's failure (an error, or a server error status), when a stored response
    /// answered in its place: this request's answer if that response cannot be replayed.
    failure: Option<Answer<ResB, E>>,
    /// The request's validators, taken off it: the answer the layer gives is checked
    /// against them; a request the handler answers itself gets them back.
    conditions: Conditions,
}

impl<S, ReqB, ResB> Run<S, ReqB, ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Send + 'static,
{
    pub(crate) fn new(inner: S, request: Request<ReqB>, conditions: Conditions) -> Self {
        Run {
            headers: request.headers().clone(),
            shared: Shared::new(inner, request),
            failure: None,
            conditions,
        }
    }

    /// What the handler answered when the layer ran it, as this request's answer (a `304`
    /// where its validators match).
    pub(crate) fn own_answer(&mut self) -> Option<Answer<ResB, S::Error>> {
        let own = self.shared.lock().own.take()?;
        Some(own.map(|response| self.answer(response)))
    }

    fn answer(&self, response: Response<CacheBody<ResB>>) -> Response<CacheBody<ResB>> {
        let empty = || CacheBody::full(Bytes::new());
        self.conditions.answer(response, empty)
    }

    /// The key of the variant of `base` this request is, by the request headers `names`.
    pub(crate) fn varied(&self, base: &str, names: &[HeaderName]) -> String {
        key::varied(base, names, &self.headers)
    }

    /// The entry at `key` (a variant of `base`, or `base` itself), through the engine: the handler runs (at most once per request)
    /// if the engine asks for a load, in this request or, for a `stale-while-revalidate`
    /// refresh, in a task of its own while this request is answered stale.
    pub(crate) async fn fetch(
        &mut self,
        layer: &CacheLayer,
        (key, base): (&str, &str),
        vary: Option<Vec<HeaderName>>,
    ) -> Option<HttpEntry> {
        let config = &layer.config;
        let keys = (key.to_owned(), base.to_owned());
        let loader = load::loader(self.shared.clone(), layer.clone(), vary, keys);
        let detach = Some(Detach::new());
        let loaded = layer
            .cache
            .fetch_with(
                &Key::raw(key),
                &config.policy,
                || loader,
                None,
                (None, detach),
            )
            .await;
        let mut slot = self.shared.lock();
        // A stored response answered in place of the handler's failure (`stale-if-error`).
        if matches!(loaded, Loaded::Cached(_)) && slot.failed {
            self.failure = slot.own.take();
        }
        match loaded {
            Loaded::Cached(entry) | Loaded::Share(entry) | Loaded::Store(entry, _) => Some(entry),
            Loaded::Alone | Loaded::Failed | Loaded::Errored => None,
        }
    }

    /// The response stored at `key`, replayed; the handler if it does not decode as one, was
    /// stored under another key (copied there by someone with write access to Redis), or is
    /// one the layer would not have stored.
    pub(crate) async fn hit(self, stored: StoredResponse, key: &str) -> Answer<ResB, S::Error> {
        let label = if stored.is_stale() { "STALE" } else { "HIT" };
        let replay = stored
            .replay(key)
            .filter(|(parts, _)| rules::may_replay(&parts.headers));
        let Some((mut parts, bytes)) = replay else {
            return self.pass_through().await;
        };
        let label = HeaderValue::from_static(label);
        parts.headers.insert(X_CACHE, label);
        Ok(self.answer(Response::from_parts(parts, CacheBody::full(bytes))))
    }

    /// The handler's answer to the request as it came (its validators put back), untouched.
    /// If the handler already ran: its failure, when a stored response that cannot be
    /// replayed answered in its place; or what the run in the background answers.
    pub(crate) async fn pass_through(mut self) -> Answer<ResB, S::Error> {
        if let Some(failure) = self.failure.take() {
            return failure;
        }
        let handler = self.shared.lock().handler.take();
        let Some((mut inner, mut request)) = handler else {
            return match self.shared.answered().await {
                Some(answer) => answer,
                None => Ok(unavailable()),
            };
        };
        std::mem::take(&mut self.conditions).restore(request.headers_mut());
        Ok(inner.call(request).await?.map(CacheBody::streaming))
    }
}

/// The answer to a request whose handler run, in the background, was dropped unanswered (an
/// entry that could not be replayed was answered stale while it ran, and it outlasted
/// `max_load`).
fn unavailable<B: Body>() -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::full(Bytes::new()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
}
