//! Whether the callers that joined a cached function's failed load take a clone of its error,
//! chosen by type at compile time: `Result<T, E>` with `E: Clone + Send + Sync + 'static` does
//! ([`ShareFailures`]), any other return type does not ([`OwnFailures`]: each joiner runs its
//! loader, as only the leader's caller can own the one error there is).

use std::marker::PhantomData;

pub use crate::read::failures::Failures;

/// Called as `(&&FailureProbe::<R>::new()).__cached_redis_failures()` with both traits in scope: method
/// lookup takes [`ShareFailures`] where it applies (autoref specialization), [`OwnFailures`]
/// otherwise.
#[derive(Debug)]
pub struct FailureProbe<R>(PhantomData<fn() -> R>);

impl<R> FailureProbe<R> {
    /// A probe of `R`.
    pub fn new() -> FailureProbe<R> {
        FailureProbe(PhantomData)
    }
}

impl<R> Default for FailureProbe<R> {
    fn default() -> FailureProbe<R> {
        FailureProbe::new()
    }
}

/// [`FailureProbe`] of a `Result` whose error can be cloned: its joiners share it.
pub trait ShareFailures<R> {
    /// Errors cloned for each joiner.
    fn __cached_redis_failures(&self) -> Option<Failures<R>>;
}

impl<T: 'static, E: Clone + Send + Sync + 'static> ShareFailures<Result<T, E>>
    for &FailureProbe<Result<T, E>>
{
    fn __cached_redis_failures(&self) -> Option<Failures<Result<T, E>>> {
        Some(Failures::cloned())
    }
}

/// [`FailureProbe`] of any other return type: nothing shared.
pub trait OwnFailures {
    /// No sharing.
    fn __cached_redis_failures<S>(&self) -> Option<Failures<S>>;
}

impl<R> OwnFailures for FailureProbe<R> {
    fn __cached_redis_failures<S>(&self) -> Option<Failures<S>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Opaque;

    // Written as the expansion writes it: the borrows are what pick the impl.
    #[allow(clippy::needless_borrow)]
    #[test]
    fn only_a_result_with_a_cloneable_error_shares_it() {
        let shared: Option<Failures<Result<u8, String>>> =
            (&&FailureProbe::<Result<u8, String>>::new()).__cached_redis_failures();
        assert!(shared.is_some());
        let opaque: Option<Failures<Result<u8, Opaque>>> =
            (&&FailureProbe::<Result<u8, Opaque>>::new()).__cached_redis_failures();
        assert!(opaque.is_none());
        let plain: Option<Failures<u8>> = (&&FailureProbe::<u8>::new()).__cached_redis_failures();
        assert!(plain.is_none());
    }
}
