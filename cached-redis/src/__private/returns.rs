//! How a function's return type is cached, chosen by type: `Result` and `Option` as they are,
//! any other type wrapped in [`Plain`].

use std::marker::PhantomData;

use crate::Plain;

/// Chooses how a return type `R` is cached, by type rather than by name, so aliases such as
/// `type DbResult<T> = Result<T, DbError>` are recognised: `Returns::<R>::PROBE.mode()` is
/// [`Direct`] for `Result` and `Option` (inherent methods win over trait methods) and
/// [`Wrapped`] for anything else (through [`PlainReturn`]).
#[derive(Debug)]
pub struct Returns<R>(PhantomData<fn() -> R>);

impl<R> Returns<R> {
    /// The probe for `R`.
    pub const PROBE: Self = Returns(PhantomData);
}

impl<T, E> Returns<Result<T, E>> {
    /// `Result` implements [`Cacheable`](crate::Cacheable) itself.
    pub fn mode(&self) -> Direct {
        Direct
    }
}

impl<T> Returns<Option<T>> {
    /// `Option` implements [`Cacheable`](crate::Cacheable) itself.
    pub fn mode(&self) -> Direct {
        Direct
    }
}

/// The fallback for return types other than `Result` and `Option`.
pub trait PlainReturn {
    /// Plain values are cached wrapped in [`Plain`].
    fn mode(&self) -> Wrapped {
        Wrapped
    }
}

impl<R> PlainReturn for Returns<R> {}

/// The return type is cached as it is.
#[derive(Debug, Clone, Copy)]
pub struct Direct;

/// The return type is cached wrapped in [`Plain`].
#[derive(Debug, Clone, Copy)]
pub struct Wrapped;

/// How a mode turns a function's return type into a [`Cacheable`] and back. Every mode holds
/// for every type; [`fetch`] asks that `Stored` be [`Cacheable`], so a value type without serde
/// is reported as that, with nothing about modes.
///
/// [`Cacheable`]: crate::Cacheable
/// [`fetch`]: super::fetch
pub trait Mode<R> {
    /// What the cache handles.
    type Stored;
    /// Into the cached form.
    fn wrap(result: R) -> Self::Stored;
    /// Back to the function's return type.
    fn unwrap(stored: Self::Stored) -> R;
}

impl<R> Mode<R> for Direct {
    type Stored = R;
    fn wrap(result: R) -> R {
        result
    }
    fn unwrap(stored: R) -> R {
        stored
    }
}

impl<R> Mode<R> for Wrapped {
    type Stored = Plain<R>;
    fn wrap(result: R) -> Plain<R> {
        Plain(result)
    }
    fn unwrap(stored: Plain<R>) -> R {
        stored.0
    }
}
