//! How the callers that joined a load that failed get its error: a clone of it, where the
//! function's error type is `Clone` (the expansion chooses this at compile time), so a key whose
//! loader fails costs one load per process however many callers wait for it; otherwise each
//! runs its own loader, since only the leader's caller can own the one error there is.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

/// A failed load's error, as its joiners receive it.
pub(crate) type SharedFailure = Arc<dyn Any + Send + Sync>;

/// How a result type's failures are handed to the callers that joined its load. Public for
/// `__private` only.
#[derive(Debug)]
pub struct Failures<R> {
    pub(crate) share: fn(&R) -> Option<SharedFailure>,
    pub(crate) take: fn(&SharedFailure) -> Option<R>,
}

/// An error of a `Result<T, E>`, typed by the whole result: two functions that share a key
/// template (and so a load in flight) share an error only if they share a value type too, as
/// they would share a stored value.
struct ErrorOf<T, E>(E, PhantomData<fn() -> T>);

impl<T: 'static, E: Clone + Send + Sync + 'static> Failures<Result<T, E>> {
    /// Errors of type `E`, cloned for each joiner of a function returning `Result<T, E>`.
    pub fn cloned() -> Failures<Result<T, E>> {
        Failures {
            share: |result| {
                let error = result.as_ref().err()?.clone();
                Some(Arc::new(ErrorOf::<T, E>(error, PhantomData)) as SharedFailure)
            },
            take: |shared| {
                let ErrorOf(error, _) = shared.downcast_ref::<ErrorOf<T, E>>()?;
                Some(Err(error.clone()))
            },
        }
    }
}

impl<R> Clone for Failures<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Failures<R> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_shared_as_a_clone_and_a_value_is_not_shared() {
        let failures = Failures::<Result<u8, String>>::cloned();
        let shared = (failures.share)(&Err("db down".into())).expect("an error");
        assert_eq!((failures.take)(&shared), Some(Err("db down".into())));
        assert_eq!(
            (failures.take)(&shared),
            Some(Err("db down".into())),
            "again"
        );
        assert!((failures.share)(&Ok(1)).is_none());
        let other: SharedFailure = Arc::new(7u32);
        assert_eq!((failures.take)(&other), None, "another type");
        let same_error = Failures::<Result<u16, String>>::cloned();
        assert_eq!((same_error.take)(&shared), None, "another value type");
    }
}
