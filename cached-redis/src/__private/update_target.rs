//! What a generated `update_*` changes in a cached value, by the function's return type.

use crate::CacheValue;

/// What a generated `update_*` hands its closure: `T`, the `Ok` value of a `Result<T, E>`
/// function or the `Some` value of an `Option<T>` one (a cached `None` has nothing to change).
/// `T` is a parameter rather than an associated type so that the helper's bound,
/// `Ret: UpdateTarget<T>`, names a type parameter: a bound on the return type alone would be
/// refused where the function is defined when the return type is plain.
#[diagnostic::on_unimplemented(
    message = "`update_*` changes the cached value of a function returning `Result<T, E>` or `Option<T>`, not `{Self}`",
    note = "for another return type, call `Cache::update(&key, |value| ...)` with the key the generated `<fn>_key` helper renders"
)]
pub trait UpdateTarget<T> {
    /// What is stored in Redis.
    type Stored: CacheValue;
    /// The part of a stored value the closure changes, if there is one.
    fn target(stored: &mut Self::Stored) -> Option<&mut T>;
}

impl<T: CacheValue, E> UpdateTarget<T> for Result<T, E> {
    type Stored = T;
    fn target(stored: &mut T) -> Option<&mut T> {
        Some(stored)
    }
}

/// `Result<Option<T>, E>` (sqlx's `fetch_optional`): the closure takes `&mut T` and runs only on
/// a cached `Ok(Some(_))`; a cached `Ok(None)` is removed, as the row may exist after the write.
/// The impl above still takes `&mut Option<T>`, so a closure's argument type chooses.
impl<T: CacheValue, E> UpdateTarget<T> for Result<Option<T>, E> {
    type Stored = Option<T>;
    fn target(stored: &mut Option<T>) -> Option<&mut T> {
        stored.as_mut()
    }
}

impl<T: CacheValue> UpdateTarget<T> for Option<T> {
    type Stored = Option<T>;
    fn target(stored: &mut Option<T>) -> Option<&mut T> {
        stored.as_mut()
    }
}
