//! Per-function caching policy: TTL, jitter, lease TTL, the bound on one load and how long
//! `None` is cached; how entries are refreshed before callers wait for them is
//! [`freshness`]'s.

mod freshness;

pub(crate) use freshness::{Due, Freshness, PerEntry, Windows};

use std::time::Duration;

use crate::Error;
use crate::random;
use crate::stored::format::{Codec, Compression, Format};

/// How much shorter than `ttl` a stored entry's TTL may be drawn.
///
/// The stored TTL is uniform in `[ttl - jitter, ttl]`: `ttl` stays the bound on staleness and
/// entries written together do not expire together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Every entry lives exactly `ttl`.
    None,
    /// A fraction of `ttl`, in parts per million (`"10%"` is `Ratio(100_000)`).
    Ratio(u32),
    /// A fixed duration, smaller than `ttl`.
    Fixed(Duration),
}

/// What the attribute's arguments become at run time; also the second argument of
/// [`Cache::fetch`](crate::Cache::fetch).
///
/// ```
/// use std::time::Duration;
/// use cached_redis::{Jitter, Policy};
///
/// let policy = Policy::new("get_user", Duration::from_secs(60))
///     .and_then(|p| p.with_jitter(Jitter::Ratio(100_000)))
///     .unwrap();
/// assert_eq!(policy.ttl(), Duration::from_secs(60));
///
/// assert!(Policy::new("f", Duration::ZERO).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub(crate) name: &'static str,
    pub(crate) ttl: Duration,
    pub(crate) jitter: Jitter,
    pub(crate) lock_ttl: Option<Duration>,
    pub(crate) none_ttl: Option<Duration>,
    pub(crate) max_load: Option<Duration>,
    /// How long a decoded value is also kept in process memory (the near cache), if at all.
    pub(crate) near: Option<Duration>,
    /// `None`: the cache's codec.
    pub(crate) codec: Option<Codec>,
    /// `None`: the cache's compression.
    pub(crate) compression: Option<Compression>,
    /// Stale-while-revalidate and early refresh.
    pub(crate) freshness: Freshness,
}

const MILLION: u64 = 1_000_000;

/// The longest lease TTL, load bound or timeout accepted: a day.
pub(crate) const LONGEST: Duration = Duration::from_secs(24 * 60 * 60);

impl Policy {
    /// A policy for the function (or cache region) `name`, caching values for `ttl`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let policy = cached_redis::Policy::new("price", Duration::from_secs(30)).unwrap();
    /// assert_eq!(policy.ttl(), Duration::from_secs(30));
    /// assert!(cached_redis::Policy::new("price", Duration::ZERO).is_err());
    /// ```
    pub fn new(name: &'static str, ttl: Duration) -> Result<Policy, Error> {
        if ttl.as_millis() == 0 {
            return Err(Error::InvalidConfig(format!(
                "ttl of `{name}` must be at least 1ms"
            )));
        }
        Ok(Policy {
            name,
            ttl,
            jitter: Jitter::None,
            lock_ttl: None,
            none_ttl: None,
            max_load: None,
            near: None,
            codec: None,
            compression: None,
            freshness: Freshness::NONE,
        })
    }

    /// Sets the jitter; it must be smaller than the TTL.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cached_redis::{Jitter, Policy};
    ///
    /// let policy = Policy::new("price", Duration::from_secs(30))?.with_jitter(Jitter::Ratio(100_000))?; // 10%
    /// assert!(Policy::new("price", Duration::from_secs(30))?.with_jitter(Jitter::Fixed(Duration::from_secs(30))).is_err());
    /// # Ok::<(), cached_redis::Error>(())
    /// ```
    pub fn with_jitter(mut self, jitter: Jitter) -> Result<Policy, Error> {
        let too_large = match jitter {
            Jitter::None => false,
            Jitter::Ratio(ppm) => u64::from(ppm) >= MILLION,
            Jitter::Fixed(d) => d >= self.ttl,
        };
        if too_large {
            return Err(Error::InvalidConfig(format!(
                "jitter of `{}` must be smaller than its ttl",
                self.name
            )));
        }
        self.jitter = jitter;
        Ok(self)
    }

    /// Overrides the cache's lease TTL (how long one loader may hold the key's lock).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let policy = cached_redis::Policy::new("report", Duration::from_secs(300))?
    ///     .with_lock_ttl(Duration::from_secs(20))?;
    /// assert_eq!(policy.lock_ttl(), Some(Duration::from_secs(20)));
    /// # Ok::<(), cached_redis::Error>(())
    /// ```
    pub fn with_lock_ttl(mut self, lock_ttl: Duration) -> Result<Policy, Error> {
        self.lock_ttl = Some(self.at_least_1ms("lock_ttl", lock_ttl)?);
        Ok(self)
    }

    /// Overrides the cache's bound on one load (see
    /// [`CacheBuilder::max_load`](crate::CacheBuilder::max_load)): past it, the lease is no longer
    /// renewed, and callers elsewhere load for themselves.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let policy = cached_redis::Policy::new("report", Duration::from_secs(300))
    ///     .and_then(|p| p.with_max_load(Duration::from_secs(120)))
    ///     .unwrap();
    /// assert_eq!(policy.max_load(), Some(Duration::from_secs(120)));
    /// ```
    pub fn with_max_load(mut self, max_load: Duration) -> Result<Policy, Error> {
        self.max_load = Some(self.at_least_1ms("max_load", max_load)?);
        Ok(self)
    }

    /// Caches `None` results for `none_ttl` (only meaningful for `Option` results).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let policy = cached_redis::Policy::new("user", Duration::from_secs(60))?
    ///     .with_none_ttl(Duration::from_secs(5))?;
    /// assert_eq!(policy.none_ttl(), Some(Duration::from_secs(5)));
    /// # Ok::<(), cached_redis::Error>(())
    /// ```
    pub fn with_none_ttl(mut self, none_ttl: Duration) -> Result<Policy, Error> {
        self.none_ttl = Some(self.at_least_1ms("none_ttl", none_ttl)?);
        Ok(self)
    }

    /// Also keeps decoded values in this process's memory for at most `near` (never past the
    /// entry's remaining Redis TTL), on a cache built with
    /// [`CacheBuilder::near_cache`](crate::CacheBuilder::near_cache); copies are dropped when
    /// Redis reports their key written or removed. Served by
    /// [`Cache::fetch_near`](crate::Cache::fetch_near), which asks that values be `Clone`;
    /// [`Cache::fetch`](crate::Cache::fetch) ignores it.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let policy = cached_redis::Policy::new("flags", Duration::from_secs(60))?
    ///     .with_near(Duration::from_secs(5))?;
    /// assert_eq!(policy.near(), Some(Duration::from_secs(5)));
    /// # Ok::<(), cached_redis::Error>(())
    /// ```
    pub fn with_near(mut self, near: Duration) -> Result<Policy, Error> {
        self.near = Some(self.at_least_1ms("near", near)?);
        Ok(self)
    }

    /// Writes this function's values with `codec` instead of the cache's
    /// ([`CacheBuilder::codec`](crate::CacheBuilder::codec)). Values are read in any codec.
    ///
    /// ```
    /// use cached_redis::{Codec, Policy};
    ///
    /// let policy = Policy::new("report", std::time::Duration::from_secs(60))?
    ///     .with_codec(Codec::MessagePack);
    /// assert_eq!(policy.codec(), Some(Codec::MessagePack));
    /// # Ok::<(), cached_redis::Error>(())
    /// ```
    pub fn with_codec(mut self, codec: Codec) -> Policy {
        self.codec = Some(codec);
        self
    }

    /// Compresses this function's values as `compression` says instead of as the cache does
    /// ([`CacheBuilder::compression`](crate::CacheBuilder::compression)); `Compression::None`
    /// turns it off for this function. zstd needs the `zstd` feature.
    ///
    /// ```
    /// use cached_redis::{Compression, Policy};
    ///
    /// let policy = Policy::new("report", std::time::Duration::from_secs(60))?
    ///     .with_compression(Compression::None)?;
    /// assert_eq!(policy.compression(), Some(Compression::None));
    /// # Ok::<(), cached_redis::Error>(())
    /// ```
    pub fn with_compression(mut self, compression: Compression) -> Result<Policy, Error> {
        self.compression = Some(compression.available()?);
        Ok(self)
    }

    /// `value` if it is at least a millisecond (and, but for `none_ttl`, at most a day), else
    /// an error naming the option.
    fn at_least_1ms(&self, option: &str, value: Duration) -> Result<Duration, Error> {
        if value.as_millis() == 0 {
            return Err(Error::InvalidConfig(format!(
                "{option} of `{}` must be at least 1ms",
                self.name
            )));
        }
        if option != "none_ttl" && value > LONGEST {
            return Err(Error::InvalidConfig(format!(
                "{option} of `{}` must be at most a day, got {value:?}",
                self.name
            )));
        }
        Ok(value)
    }

    /// The function or region name, used in logs and statistics.
    ///
    /// ```
    /// let policy = cached_redis::Policy::new("price", std::time::Duration::from_secs(30)).unwrap();
    /// assert_eq!(policy.name(), "price");
    /// ```
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The upper bound on how long an entry lives.
    ///
    /// ```
    /// let policy = cached_redis::Policy::new("price", std::time::Duration::from_secs(30)).unwrap();
    /// assert_eq!(policy.ttl().as_secs(), 30);
    /// ```
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The jitter.
    ///
    /// ```
    /// let policy = cached_redis::Policy::new("price", std::time::Duration::from_secs(30)).unwrap();
    /// assert!(matches!(policy.jitter(), cached_redis::Jitter::None));
    /// ```
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The lease TTL override, if any.
    ///
    /// ```
    /// let policy = cached_redis::Policy::new("price", std::time::Duration::from_secs(30)).unwrap();
    /// assert_eq!(policy.lock_ttl(), None, "the cache's lease TTL applies");
    /// ```
    pub fn lock_ttl(&self) -> Option<Duration> {
        self.lock_ttl
    }

    /// The bound on one load, if overridden.
    ///
    /// ```
    /// let policy = cached_redis::Policy::new("price", std::time::Duration::from_secs(30)).unwrap();
    /// assert_eq!(policy.max_load(), None);
    /// ```
    pub fn max_load(&self) -> Option<Duration> {
        self.max_load
    }

    /// How long `None` is cached, if it is.
    ///
    /// ```
    /// let policy = cached_redis::Policy::new("price", std::time::Duration::from_secs(30)).unwrap();
    /// assert_eq!(policy.none_ttl(), None, "None is not cached");
    /// ```
    pub fn none_ttl(&self) -> Option<Duration> {
        self.none_ttl
    }

    /// How long decoded values are also kept in process memory, if they are.
    ///
    /// ```
    /// let policy = cached_redis::Policy::new("price", std::time::Duration::from_secs(30)).unwrap();
    /// assert_eq!(policy.near(), None);
    /// ```
    pub fn near(&self) -> Option<Duration> {
        self.near
    }

    /// `default` (the cache's format) with this policy's own settings where it has them.
    pub(crate) fn format(&self, default: Format) -> Format {
        Format {
            codec: self.codec.unwrap_or(default.codec),
            compression: self.compression.unwrap_or(default.compression),
        }
    }

    /// The codec override, if any.
    ///
    /// ```
    /// let policy = cached_redis::Policy::new("price", std::time::Duration::from_secs(30)).unwrap();
    /// assert_eq!(policy.codec(), None, "the cache's codec applies");
    /// ```
    pub fn codec(&self) -> Option<Codec> {
        self.codec
    }

    /// The compression override, if any.
    ///
    /// ```
    /// let policy = cached_redis::Policy::new("price", std::time::Duration::from_secs(30)).unwrap();
    /// assert_eq!(policy.compression(), None, "the cache's compression applies");
    /// ```
    pub fn compression(&self) -> Option<Compression> {
        self.compression
    }

    /// Draws the TTL to store an entry with: uniform in `[base - jitter, base]`, in whole
    /// milliseconds and at least 1. `base` is `ttl` or `none_ttl`; jitter scales with it.
    pub(crate) fn draw_ttl_ms(&self, base: Duration) -> u64 {
        let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(1);
        let ppm = match self.jitter {
            Jitter::None => 0,
            Jitter::Ratio(ppm) => u64::from(ppm),
            Jitter::Fixed(d) => {
                let ttl_ms = self.ttl.as_millis().max(1);
                u64::try_from(d.as_millis().saturating_mul(u128::from(MILLION)) / ttl_ms)
                    .unwrap_or(MILLION)
            }
        };
        let span = u64::try_from(u128::from(base_ms) * u128::from(ppm.min(MILLION)) / 1_000_000)
            .unwrap_or(base_ms);
        if span == 0 {
            return base_ms;
        }
        (base_ms - random::below(span + 1)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(p: &Policy, base: Duration) -> (u64, u64) {
        (0..2000)
            .map(|_| p.draw_ttl_ms(base))
            .fold((u64::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)))
    }

    #[test]
    fn jitter_only_shortens_and_spreads() {
        let p = Policy::new("f", Duration::from_secs(60))
            .unwrap()
            .with_jitter(Jitter::Ratio(100_000))
            .unwrap();
        let (lo, hi) = draws(&p, p.ttl());
        assert!(lo >= 54_000 && hi <= 60_000, "{lo}..{hi}");
        assert!(hi - lo > 3_000, "draws should spread: {lo}..{hi}");
    }

    #[test]
    fn fixed_jitter_scales_to_none_ttl() {
        let p = Policy::new("f", Duration::from_secs(10))
            .unwrap()
            .with_jitter(Jitter::Fixed(Duration::from_secs(5)))
            .unwrap();
        let (lo, hi) = draws(&p, Duration::from_secs(2));
        assert!(lo >= 1_000 && hi <= 2_000, "{lo}..{hi}");
    }

    #[test]
    fn no_jitter_is_exact() {
        let p = Policy::new("f", Duration::from_millis(1500)).unwrap();
        assert_eq!(draws(&p, p.ttl()), (1500, 1500));
    }

    #[test]
    fn invalid_policies_are_rejected() {
        let p = Policy::new("f", Duration::from_secs(1)).unwrap();
        assert!(p.with_max_load(Duration::MAX).is_err(), "over a day");
        assert!(p.with_lock_ttl(LONGEST + Duration::from_secs(1)).is_err());
        assert!(p.with_none_ttl(LONGEST * 7).is_ok(), "none_ttl is a ttl");
        assert!(p.with_jitter(Jitter::Ratio(1_000_000)).is_err());
        assert!(
            p.with_jitter(Jitter::Fixed(Duration::from_secs(1)))
                .is_err()
        );
        assert!(p.with_lock_ttl(Duration::ZERO).is_err());
        assert!(p.with_none_ttl(Duration::from_micros(10)).is_err());
    }
}
