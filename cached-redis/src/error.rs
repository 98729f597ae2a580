//! The crate's error type.

use std::fmt;
use std::time::Duration;

/// What can go wrong in cached-redis.
///
/// A cached function never returns this type: Redis trouble during a cached call falls back to
/// the loader. It is returned by [`CacheBuilder::build`](crate::CacheBuilder::build) for invalid
/// configuration and by invalidation, where the caller must learn that an entry may still be
/// cached.
///
/// It is `Clone` (so an application error enum deriving `Clone` can wrap it), `Send` and
/// `Sync`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = cached_redis::Cache::builder("not a url").build().await.unwrap_err();
/// assert!(matches!(err, cached_redis::Error::InvalidUrl { .. }));
/// assert!(err.to_string().starts_with("invalid redis url"));
///
/// #[derive(Debug, Clone)]
/// enum AppError {
///     Cache(cached_redis::Error),
/// }
/// let wrapped = AppError::Cache(err.clone());
/// # let _ = wrapped;
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The connection string could not be parsed. The URL is shown with its password redacted.
    InvalidUrl {
        /// The URL as given, password replaced by `***`.
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// A builder or policy option is out of range.
    InvalidConfig(String),
    /// No cache is installed: neither `cache = ...` on the attribute nor
    /// [`set_global`](crate::set_global).
    NotConfigured,
    /// The cache is disabled ([`Cache::disabled`](crate::Cache::disabled), or built from an
    /// empty URL): there is no Redis to ask.
    Disabled,
    /// Redis answered with an error, or the connection failed.
    Redis(redis::RedisError),
    /// Redis did not answer within `op_timeout`.
    Timeout(Duration),
    /// Recent Redis calls failed, so the circuit breaker is open and Redis is not being called.
    Unavailable,
    /// The primary removed the entry, but fewer replicas than
    /// [`CacheBuilder::invalidate_replicas`](crate::CacheBuilder::invalidate_replicas) asks for
    /// confirmed it in time: if the primary fails now, a promoted replica may still serve the
    /// entry (until its TTL). Retry, or treat the entry as possibly stale.
    NotReplicated {
        /// Replicas that confirmed.
        acknowledged: u32,
        /// Replicas asked for.
        wanted: u32,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidUrl { url, reason } => write!(f, "invalid redis url `{url}`: {reason}"),
            Error::InvalidConfig(what) => write!(f, "invalid cache configuration: {what}"),
            Error::Disabled => f.write_str("the cache is disabled: there is no Redis to ask"),
            Error::NotConfigured => f.write_str(
                "no cache configured: call cached_redis::set_global(cache) at start-up or pass `cache = ...` to the attribute",
            ),
            Error::Redis(e) => write!(f, "redis command failed: {e}"),
            Error::Timeout(after) => write!(f, "redis did not answer within {after:?}"),
            Error::Unavailable => {
                f.write_str("redis is unavailable (circuit breaker open after repeated failures)")
            }
            Error::NotReplicated {
                acknowledged,
                wanted,
            } => write!(
                f,
                "the invalidation reached the primary, but only {acknowledged} of {wanted} replicas confirmed it in time; a failover may bring the entry back"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Redis(e) => Some(e),
            _ => None,
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Redis(e)
    }
}

/// Replaces the password in a connection URL (`scheme://user:password@host`) by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let redacted_userinfo = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None if !userinfo.is_empty() => "***".to_owned(),
        None => String::new(),
    };
    format!(
        "{}{}{}",
        &url[..scheme_end + 3],
        redacted_userinfo,
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://app:s3cret@cache:6379/0"),
            "redis://app:***@cache:6379/0"
        );
        assert_eq!(redact_url("rediss://:s3cret@cache"), "rediss://:***@cache");
        assert_eq!(redact_url("redis://token@cache"), "redis://***@cache");
        assert_eq!(
            redact_url("redis://a:p@ss@host/?x=@"),
            "redis://a:***@host/?x=@"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
