//! Which results are cached, for how long, and what callers that shared a load receive.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Policy;

/// A value that can be stored in the cache: serde's `Serialize + DeserializeOwned`, stored as
/// JSON.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: it must implement serde's `Serialize` and `Deserialize`",
    label = "the cached value's type",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to `{Self}`"
)]
pub trait CacheValue: Serialize + DeserializeOwned {}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> CacheValue for T {}

/// How a loader's result splits into what is cached.
#[derive(Debug)]
pub enum Split<V, R> {
    /// Cache `V` for this long and return it.
    Store(V, Duration),
    /// Do not cache `V`, but callers that shared the load may receive it (an uncached `None`).
    Pass(V),
    /// Do not cache; return this result to its own caller only (an `Err`, which is not `Clone`).
    Keep(R),
    /// Not an error, but neither cached nor shared: return it to its own caller only; callers
    /// that shared the load run their own (a `Some(None)`, which JSON cannot carry).
    Alone(R),
}

impl<V, R> Split<V, R> {
    /// The value to share and how long to store it (`None`: not at all), or the result to
    /// return to its own caller only, with whether it is a failure (a load error).
    pub(crate) fn shared(self) -> Result<(V, Option<Duration>), (R, bool)> {
        match self {
            Split::Store(value, ttl) => Ok((value, Some(ttl))),
            Split::Pass(value) => Ok((value, None)),
            Split::Keep(result) => Err((result, true)),
            Split::Alone(result) => Err((result, false)),
        }
    }
}

/// A function result that the cache knows how to store: `Result<T, E>` (only `Ok` is cached;
/// `Ok(None)` of a `Result<Option<T>, E>` only with a `none_ttl`), `Option<T>` (`None` only
/// with a `none_ttl`) and [`Plain<T>`] for any other `T`.
///
/// ```
/// use std::time::Duration;
/// use cached_redis::{Cacheable, Policy, Split};
///
/// let policy = Policy::new("f", Duration::from_secs(5)).unwrap();
/// assert!(matches!(Ok::<u32, String>(1).split(&policy), Split::Store(1, _)));
/// assert!(matches!(Err::<u32, String>("db down".into()).split(&policy), Split::Keep(Err(_))));
/// assert!(matches!(None::<u32>.split(&policy), Split::Pass(None)));
/// assert!(matches!(Ok::<Option<u32>, String>(None).split(&policy), Split::Pass(None)));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a result cached-redis can cache",
    note = "cached functions return `Result<T, E>`, `Option<T>` or a plain `T`, where `T` implements serde's `Serialize` and `Deserialize`"
)]
pub trait Cacheable: Sized {
    /// What is stored in Redis.
    type Value: CacheValue;

    /// Splits a loader's result.
    fn split(self, policy: &Policy) -> Split<Self::Value, Self>;

    /// Rebuilds a result from a stored value.
    fn from_value(value: Self::Value) -> Self;

    /// Whether this result is a failure (an `Err`), which `fail_safe` answers for; `false`
    /// unless overridden.
    ///
    /// ```
    /// use cached_redis::Cacheable;
    ///
    /// assert!(Err::<u32, String>("down".into()).is_failure());
    /// assert!(!Ok::<u32, String>(7).is_failure());
    /// assert!(!None::<u32>.is_failure(), "a `None` is an answer, not a failure");
    /// ```
    fn is_failure(&self) -> bool {
        false
    }

    /// How long past its TTL `value`'s entry is kept and served while it is refreshed, and
    /// kept to answer for a failed load, where the value says so itself (an HTTP response's
    /// `stale-while-revalidate` and `stale-if-error`); only a policy that takes each entry's
    /// own windows asks. `None` unless overridden.
    #[doc(hidden)]
    fn windows(_value: &Self::Value) -> Option<(Option<Duration>, Option<Duration>)> {
        None
    }
}

/// `Ok(None)` of a `Result<Option<T>, E>` (what sqlx's `fetch_optional` returns) is treated
/// like a `None`: cached only with a `none_ttl`, for that long.
impl<T: CacheValue, E> Cacheable for Result<T, E> {
    type Value = T;

    fn split(self, policy: &Policy) -> Split<T, Self> {
        match self {
            Ok(v) => split_value(v, policy, Ok),
            Err(e) => Split::Keep(Err(e)),
        }
    }

    fn from_value(value: T) -> Self {
        Ok(value)
    }

    fn is_failure(&self) -> bool {
        self.is_err()
    }
}

impl<T: CacheValue> Cacheable for Option<T> {
    type Value = Option<T>;

    fn split(self, policy: &Policy) -> Split<Option<T>, Self> {
        split_value(self, policy, |v| v)
    }

    fn from_value(value: Option<T>) -> Self {
        value
    }
}

/// How a value is cached: a `None` (an `Option`'s, or a `Result`'s `Ok(None)`) only with a
/// `none_ttl`, for that long; a `Some(None)` neither cached nor shared (JSON stores it as the
/// same `null`, and it would read back as `None`): `alone` makes it its caller's result;
/// anything else for the TTL.
fn split_value<V: CacheValue, R>(
    value: V,
    policy: &Policy,
    alone: impl FnOnce(V) -> R,
) -> Split<V, R> {
    use crate::stored::none_probe::{Shape, shape};
    match (shape(&value), policy.none_ttl()) {
        (Shape::None, Some(none_ttl)) => Split::Store(value, none_ttl),
        (Shape::None, None) => Split::Pass(value),
        (Shape::SomeOfNone, _) => Split::Alone(alone(value)),
        (Shape::Value, _) => Split::Store(value, policy.ttl()),
    }
}

/// Marks a plain `T` result, cached whatever its value. The attribute wraps plain return types
/// in it; [`Cache::fetch`](crate::Cache::fetch) callers can too.
///
/// ```
/// use std::time::Duration;
/// use cached_redis::{Cacheable, Plain, Policy, Split};
///
/// let policy = Policy::new("f", Duration::from_secs(5)).unwrap();
/// assert!(matches!(Plain(7u8).split(&policy), Split::Store(7, _)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plain<T>(pub T);

impl<T: CacheValue> Cacheable for Plain<T> {
    type Value = T;

    fn split(self, policy: &Policy) -> Split<T, Self> {
        Split::Store(self.0, policy.ttl())
    }

    fn from_value(value: T) -> Self {
        Plain(value)
    }
}

/// A result whose value is stored only if `keep` holds for it (`cache_if`); otherwise it is
/// returned, and shared with callers that joined its load, like an uncached `None`.
pub(crate) struct Conditional<C, K> {
    inner: C,
    /// `None` for a result rebuilt from a stored value, which is never split again.
    keep: Option<K>,
}

impl<C, K> Conditional<C, K> {
    pub(crate) fn new(inner: C, keep: K) -> Self {
        Conditional {
            inner,
            keep: Some(keep),
        }
    }

    pub(crate) fn into_inner(self) -> C {
        self.inner
    }
}

impl<C: Cacheable, K: Fn(&C::Value) -> bool> Cacheable for Conditional<C, K> {
    type Value = C::Value;

    fn split(self, policy: &Policy) -> Split<C::Value, Self> {
        let keep = self.keep;
        let rewrap = |inner| Conditional { inner, keep: None };
        match self.inner.split(policy) {
            Split::Store(value, ttl) => match &keep {
                Some(keep) if !keep(&value) => Split::Pass(value),
                _ => Split::Store(value, ttl),
            },
            Split::Pass(value) => Split::Pass(value),
            Split::Keep(result) => Split::Keep(rewrap(result)),
            Split::Alone(result) => Split::Alone(rewrap(result)),
        }
    }

    fn from_value(value: C::Value) -> Self {
        Conditional {
            inner: C::from_value(value),
            keep: None,
        }
    }

    fn is_failure(&self) -> bool {
        self.inner.is_failure()
    }

    fn windows(value: &C::Value) -> Option<(Option<Duration>, Option<Duration>)> {
        C::windows(value)
    }
}
