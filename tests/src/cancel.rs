//! A future dropped after a number of polls: a caller cancelled at its n-th await.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Drops the inner future once it has returned `Pending` `polls` times (at its `polls`-th
/// await), answering `None`; `Some` if it finished first.
#[derive(Debug)]
pub struct CancelAfter<F> {
    inner: Pin<Box<F>>,
    polls: usize,
}

impl<F: Future> CancelAfter<F> {
    /// `inner`, dropped after `polls` polls.
    pub fn new(inner: F, polls: usize) -> CancelAfter<F> {
        CancelAfter {
            inner: Box::pin(inner),
            polls,
        }
    }
}

impl<F: Future> Future for CancelAfter<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polls == 0 {
            return Poll::Ready(None);
        }
        self.polls -= 1;
        self.inner.as_mut().poll(cx).map(Some)
    }
}
