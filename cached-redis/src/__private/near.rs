//! Whether a cached function keeps its values near (`near = "..."`), checked at compile time:
//! the near cache keeps copies, so the value type must be `Clone`.

use std::marker::PhantomData;
use std::time::Instant;

use crate::Cache;
pub use crate::read::near::Copies;

/// Whether a cached function keeps values near: [`KeepNear`] (`near = ...`) or [`NotNear`].
#[diagnostic::on_unimplemented(
    message = "`near` keeps copies of `{T}` in memory: it must be `Clone + Send + Sync + 'static`",
    label = "`{T}` is not `Clone` (or not `Send + Sync + 'static`)",
    note = "derive `Clone` for it, or return an `Arc<{T}>`, which clones cheaply"
)]
pub trait NearChoice<T> {
    /// The near cache's operations for `T`, if values are kept near.
    fn copies(self) -> Option<Copies<T>>;
}

/// `near = ...` was written.
#[derive(Debug, Clone, Copy)]
pub struct KeepNear;

/// No `near`.
#[derive(Debug, Clone, Copy)]
pub struct NotNear;

impl<T> NearChoice<T> for NotNear {
    fn copies(self) -> Option<Copies<T>> {
        None
    }
}

#[diagnostic::do_not_recommend]
impl<T: Clone + Send + Sync + 'static> NearChoice<T> for KeepNear {
    fn copies(self) -> Option<Copies<T>> {
        Some(Copies::of())
    }
}

/// Whether a function that does not say `near` can keep its values near, for a cache with
/// [`near_by_default`](crate::CacheBuilder::near_by_default): called as
/// `(&&&NearProbe::<R>::new()).__cached_redis_near()` on the function's return type `R` with the three traits
/// in scope, method lookup takes [`KeepsInner`] where `R` is a `Result` or `Option` whose
/// value can be copied, [`KeepsPlain`] where `R` itself can, and [`KeepsNothing`] otherwise
/// (autoref specialization). The method's name is one no user trait in scope at the function
/// has, so none is a candidate beside these. Their bounds hold `'static`, which method lookup does not weigh:
/// the expansion probes only return types that neither borrow nor name generic parameters.
#[derive(Debug)]
pub struct NearProbe<R>(PhantomData<fn() -> R>);

impl<R> NearProbe<R> {
    /// A probe of `R`.
    pub fn new() -> NearProbe<R> {
        NearProbe(PhantomData)
    }
}

impl<R> Default for NearProbe<R> {
    fn default() -> NearProbe<R> {
        NearProbe::new()
    }
}

/// [`NearProbe`] of a `Result` or an `Option` whose value can be copied.
pub trait KeepsInner {
    /// Values kept near.
    fn __cached_redis_near(&self) -> KeepNear;
}

impl<T: Clone + Send + Sync + 'static, E> KeepsInner for &&NearProbe<Result<T, E>> {
    fn __cached_redis_near(&self) -> KeepNear {
        KeepNear
    }
}

impl<T: Clone + Send + Sync + 'static> KeepsInner for &&NearProbe<Option<T>> {
    fn __cached_redis_near(&self) -> KeepNear {
        KeepNear
    }
}

/// [`NearProbe`] of a plain return type that can be copied.
pub trait KeepsPlain {
    /// Values kept near.
    fn __cached_redis_near(&self) -> KeepNear;
}

impl<R: Clone + Send + Sync + 'static> KeepsPlain for &NearProbe<R> {
    fn __cached_redis_near(&self) -> KeepNear {
        KeepNear
    }
}

/// [`NearProbe`] of any other return type: nothing kept.
pub trait KeepsNothing {
    /// Nothing kept near.
    fn __cached_redis_near(&self) -> NotNear;
}

impl<R> KeepsNothing for NearProbe<R> {
    fn __cached_redis_near(&self) -> NotNear {
        NotNear
    }
}

/// Whether `cache`'s near cache has applied every invalidation Redis sent before `at`: for
/// tests that need an invalidation from elsewhere to have arrived.
pub fn near_applied_since(cache: &Cache, at: Instant) -> bool {
    cache
        .inner
        .near
        .as_ref()
        .is_some_and(|near| near.applied_since(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Opaque;

    fn keeps<T>(choice: impl NearChoice<T>) -> bool {
        choice.copies().is_some()
    }

    // Written as the expansion writes it: the borrows are what pick the impl.
    #[allow(clippy::needless_borrow)]
    #[test]
    fn values_that_can_be_copied_are_kept() {
        assert!(keeps::<u8>(
            (&&&NearProbe::<Result<u8, Opaque>>::new()).__cached_redis_near()
        ));
        assert!(keeps::<Option<String>>(
            (&&&NearProbe::<Option<String>>::new()).__cached_redis_near()
        ));
        assert!(keeps::<Vec<u8>>(
            (&&&NearProbe::<Vec<u8>>::new()).__cached_redis_near()
        ));
        assert!(!keeps::<Opaque>(
            (&&&NearProbe::<Result<Opaque, String>>::new()).__cached_redis_near()
        ));
        assert!(!keeps::<Option<Opaque>>(
            (&&&NearProbe::<Option<Opaque>>::new()).__cached_redis_near()
        ));
        assert!(!keeps::<Opaque>(
            (&&&NearProbe::<Opaque>::new()).__cached_redis_near()
        ));
        // Clone but not Sync.
        assert!(!keeps::<std::cell::Cell<u8>>(
            (&&&NearProbe::<std::cell::Cell<u8>>::new()).__cached_redis_near()
        ));
    }
}
