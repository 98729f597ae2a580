//! Whether a cached function keeps its values near (`near = "..."`), checked at compile time:
//! the near cache keeps copies, so the value type must be `Clone`.

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

/// Whether `cache`'s near cache has applied every invalidation Redis sent before `at`: for
/// tests that need an invalidation from elsewhere to have arrived.
pub fn near_applied_since(cache: &Cache, at: Instant) -> bool {
    cache
        .inner
        .near
        .as_ref()
        .is_some_and(|near| near.applied_since(at))
}
