//! The body of a response through the layer, and reading a handler's body up to a limit.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;

/// The body of a response through [`CacheLayer`](super::CacheLayer): bytes from Redis or read
/// from the handler, or the handler's own body streaming through (one longer than `max_body`,
/// or a request the layer does not cache).
///
/// ```
/// use http_body::Body as _;
/// # fn demo(body: cached_redis::http::CacheBody<http_body_util::Empty<bytes::Bytes>>) {
/// let length = body.size_hint().exact();
/// # }
/// ```
pub struct CacheBody<B: Body> {
    kind: Kind<B>,
}

enum Kind<B: Body> {
    Full(Option<Bytes>),
    Streaming {
        prefix: Option<Bytes>,
        rest: Pin<Box<B>>,
    },
    Failed(Option<Box<B::Error>>),
}

impl<B: Body> CacheBody<B> {
    pub(crate) fn full(bytes: Bytes) -> CacheBody<B> {
        CacheBody {
            kind: Kind::Full(Some(bytes)),
        }
    }

    pub(crate) fn streaming(body: B) -> CacheBody<B> {
        CacheBody {
            kind: Kind::Streaming {
                prefix: None,
                rest: Box::pin(body),
            },
        }
    }
}

impl<B: Body> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full(_) => "full",
            Kind::Streaming { .. } => "streaming",
            Kind::Failed(_) => "failed",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}

impl<B: Body<Data = Bytes>> Body for CacheBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => {
                let bytes = bytes.take().filter(|b| !b.is_empty());
                Poll::Ready(bytes.map(|b| Ok(Frame::data(b))))
            }
            Kind::Streaming { prefix, rest } => match prefix.take() {
                Some(prefix) => Poll::Ready(Some(Ok(Frame::data(prefix)))),
                None => rest.as_mut().poll_frame(cx),
            },
            Kind::Failed(error) => Poll::Ready(error.take().map(|e| Err(*e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Kind::Streaming { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
            Kind::Failed(error) => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Streaming { prefix, rest } => {
                let before = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + before);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + before);
                }
                hint
            }
            Kind::Failed(_) => SizeHint::default(),
        }
    }
}

/// A handler's body, read up to a limit.
pub(crate) enum Buffered<B: Body> {
    /// All of it.
    Whole(Bytes),
    /// Longer than the limit, or failed: what was read, then the rest, as it comes.
    Passed(CacheBody<B>),
}

/// Reads `body` while it stays within `limit` bytes. Trailers of a body read whole are dropped.
pub(crate) async fn buffer<B: Body<Data = Bytes>>(body: B, limit: usize) -> Buffered<B> {
    if body.size_hint().lower() > limit as u64 {
        return Buffered::Passed(CacheBody::streaming(body));
    }
    let mut rest = Box::pin(body);
    let mut read = BytesMut::new();
    loop {
        match rest.frame().await {
            None => return Buffered::Whole(read.freeze()),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                read.extend_from_slice(&data);
                if read.len() > limit {
                    let prefix = Some(read.freeze());
                    let kind = Kind::Streaming { prefix, rest };
                    return Buffered::Passed(CacheBody { kind });
                }
            }
            Some(Err(error)) => {
                let kind = Kind::Failed(Some(Box::new(error)));
                return Buffered::Passed(CacheBody { kind });
            }
        }
    }
}
