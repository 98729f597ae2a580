//! How the callers that joined a load that failed get its error: a clone of it, where the
//! function's error type is `Clone` (the expansion chooses this at compile time), so a key whose
//! loader fails costs one load per process however many callers wait for it; otherwise each
//! runs its own loader, since only the leader's caller can own the one error there is.

use std::any::Any;
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

impl<T, E: Clone + Send + Sync + 'static> Failures<Result<T, E>> {
    /// Errors of type `E`, cloned for each joiner.
    pub fn cloned() -> Failures<Result<T, E>> {
        Failures {
            share: |result| {
                let error = result.as_ref().err()?;
                Some(Arc::new(error.clone()) as SharedFailure)
            },
            take: |shared| shared.downcast_ref::<E>().map(|error| Err(error.clone())),
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
    }
}
