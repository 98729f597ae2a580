//! When an entry is refreshed before its callers wait for a load, and what answers when the
//! load fails: kept `stale` past its TTL and served while one caller refreshes it, refreshed
//! early by a hit that draws it (the XFetch rule of Vattani, Chierichetti and Lowenstein,
//! "Optimal Probabilistic Cache Stampede Prevention", VLDB 2015), or kept `fail_safe` past its
//! TTL to answer in place of a load's error.
//!
//! Redis keeps such an entry for its drawn TTL plus the longer of `stale` and `fail_safe`, and
//! the entry carries its soft expiry (`exp`, when its drawn TTL ends, in Unix milliseconds), so
//! a hit is one `GET`. The writer's clock sets it and the reader's reads it: clocks that
//! disagree by `d` move the end of the TTL by `d`, within Redis's own expiry.

use std::time::Duration;

use super::{MILLION, Policy};
use crate::{Error, random};

/// Stale-while-revalidate and early refresh, as a policy asks for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// How long past its TTL an entry is kept and served while it is refreshed.
    pub(crate) stale: Option<Duration>,
    /// Early refresh's β, in millionths.
    pub(crate) early: Option<u32>,
    /// How long past its TTL an entry is kept to answer in place of a failed load's error.
    pub(crate) fail_safe: Option<Duration>,
    /// How long a key is answered by its entry without loading after a `fail_safe` answer
    /// (`None`: [`BACK_OFF`]).
    pub(crate) back_off: Option<Duration>,
    /// Whether each entry is judged by its own soft expiry (past it, outside any window, it is
    /// a miss, whatever Redis keeps it for: another reader's windows), and whether its own
    /// `stale` and `fail_safe` ([`Windows`]) replace these: an HTTP response's
    /// `stale-while-revalidate` and `stale-if-error`.
    pub(crate) per_entry: PerEntry,
}

/// How a policy judges each entry by what the entry says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Only the HTTP layer's policy judges its entries.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) enum PerEntry {
    /// It does not: the policy's own windows, and Redis's TTL.
    No,
    /// By its soft expiry, with no window past it.
    Expiry,
    /// By its soft expiry and its own windows.
    Windows,
}

/// How long past its TTL one entry is kept and served while it is refreshed (`stale`), and
/// kept to answer in place of a failed load's error (`fail_safe`), where the entry says so
/// itself ([`Cacheable::windows`](crate::Cacheable::windows)).
pub(crate) type Windows = (Option<Duration>, Option<Duration>);

/// How long a key is answered by its entry without loading after a `fail_safe` answer, unless
/// its policy says.
pub(crate) const BACK_OFF: Duration = Duration::from_secs(1);

impl Freshness {
    pub(crate) const NONE: Freshness = Freshness {
        stale: None,
        early: None,
        fail_safe: None,
        back_off: None,
        per_entry: PerEntry::No,
    };
}

/// What a hit's remaining time says about its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Fresh; a near copy of it may be kept this long: until its TTL ends or, with early
    /// refresh, until the draw's window opens (three load times × β before the end, when a
    /// hit would draw a refresh one time in twenty), so that hits read Redis and draw again.
    Fresh(Duration),
    /// Fresh, but this hit drew an early refresh.
    Early,
    /// Past its TTL, within `stale`.
    Stale,
    /// Past its TTL and `stale`, within `fail_safe`: loaded as on a miss, and answering in
    /// place of the load's error.
    Expired,
}

/// The largest β accepted: past it, every hit of a slow load would refresh.
const MAX_BETA: f64 = 1_000.0;

impl Policy {
    /// Keeps entries `stale` (at least 1 ms, at most a day) past their TTL. A call that finds an entry past its TTL is
    /// answered with it at once while one caller (in any process) refreshes it under the
    /// lease; that caller waits for its load. An invalidated entry is removed whole and never
    /// served stale.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let policy = cached_redis::Policy::new("catalog", Duration::from_secs(60))?
    ///     .with_stale(Duration::from_secs(300))?;
    /// assert_eq!(policy.stale(), Some(Duration::from_secs(300)));
    /// # Ok::<(), cached_redis::Error>(())
    /// ```
    pub fn with_stale(mut self, stale: Duration) -> Result<Policy, Error> {
        self.freshness.stale = Some(self.at_least_1ms("stale", stale)?);
        Ok(self)
    }

    /// Refreshes entries early, by the XFetch rule: a hit refreshes its entry when
    /// `load time × beta × −ln(u) ≥ time left` (`u` uniform in (0, 1]), so the entry of a
    /// key read steadily is reloaded about once per TTL, shortly before it expires, by one
    /// caller (who waits for the load) while the others are answered from the cache. `beta`
    /// above 1 refreshes earlier; it must be in (0, 1000].
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let policy = cached_redis::Policy::new("prices", Duration::from_secs(60))?
    ///     .with_early_refresh(1.0)?;
    /// assert_eq!(policy.early_refresh(), Some(1.0));
    /// assert!(policy.with_early_refresh(0.0).is_err());
    /// # Ok::<(), cached_redis::Error>(())
    /// ```
    pub fn with_early_refresh(mut self, beta: f64) -> Result<Policy, Error> {
        if !(beta > 0.0 && beta <= MAX_BETA) {
            return Err(Error::InvalidConfig(format!(
                "the early refresh beta of `{}` must be in (0, 1000], got {beta}",
                self.name
            )));
        }
        self.freshness.early = Some(((beta * MILLION as f64).round() as u32).max(1));
        Ok(self)
    }

    /// Keeps entries `fail_safe` (at least 1 ms, at most a day) past their TTL for when a
    /// load fails: a call that finds an entry past its TTL (and past `stale`) loads as on a
    /// miss; if the load returns `Err`, the call is answered with the entry instead, and for a
    /// second this process answers the key's calls with the entry without loading. For
    /// functions returning `Result`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let policy = cached_redis::Policy::new("catalog", Duration::from_secs(60))?
    ///     .with_fail_safe(Duration::from_secs(3600))?;
    /// assert_eq!(policy.fail_safe(), Some(Duration::from_secs(3600)));
    /// # Ok::<(), cached_redis::Error>(())
    /// ```
    pub fn with_fail_safe(mut self, fail_safe: Duration) -> Result<Policy, Error> {
        self.freshness.fail_safe = Some(self.at_least_1ms("fail_safe", fail_safe)?);
        Ok(self)
    }

    /// After a `fail_safe` answer, how long this process answers the key's calls with its
    /// entry without loading (at least 1 ms, at most a day; 1 s unless set). It applies only
    /// with [`with_fail_safe`](Policy::with_fail_safe).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let policy = cached_redis::Policy::new("catalog", Duration::from_secs(60))?
    ///     .with_fail_safe(Duration::from_secs(3600))?
    ///     .with_back_off(Duration::from_secs(5))?;
    /// assert_eq!(policy.back_off(), Duration::from_secs(5));
    /// # Ok::<(), cached_redis::Error>(())
    /// ```
    pub fn with_back_off(mut self, back_off: Duration) -> Result<Policy, Error> {
        self.freshness.back_off = Some(self.at_least_1ms("back_off", back_off)?);
        Ok(self)
    }

    /// How long a key is answered by its entry without loading after a `fail_safe` answer.
    ///
    /// ```
    /// let policy = cached_redis::Policy::new("price", std::time::Duration::from_secs(30)).unwrap();
    /// assert_eq!(policy.back_off(), std::time::Duration::from_secs(1));
    /// ```
    pub fn back_off(&self) -> Duration {
        self.freshness.back_off.unwrap_or(BACK_OFF)
    }

    /// How long entries are kept past their TTL to answer for a failed load, if they are.
    ///
    /// ```
    /// let policy = cached_redis::Policy::new("price", std::time::Duration::from_secs(30)).unwrap();
    /// assert_eq!(policy.fail_safe(), None);
    /// ```
    pub fn fail_safe(&self) -> Option<Duration> {
        self.freshness.fail_safe
    }

    /// How long entries are kept and served past their TTL, if they are.
    ///
    /// ```
    /// let policy = cached_redis::Policy::new("price", std::time::Duration::from_secs(30)).unwrap();
    /// assert_eq!(policy.stale(), None);
    /// ```
    pub fn stale(&self) -> Option<Duration> {
        self.freshness.stale
    }

    /// Early refresh's beta, if entries are refreshed early.
    ///
    /// ```
    /// let policy = cached_redis::Policy::new("price", std::time::Duration::from_secs(30)).unwrap();
    /// assert_eq!(policy.early_refresh(), None);
    /// ```
    pub fn early_refresh(&self) -> Option<f64> {
        self.freshness
            .early
            .map(|ppm| f64::from(ppm) / MILLION as f64)
    }

    /// Whether a hit needs nothing but the value: no near copy to keep, no remaining time or
    /// metadata to judge it by (such a call may start with the lease script,
    /// [`first_read`](crate::read::first_read)).
    #[inline]
    pub(crate) fn reads_value_only(&self) -> bool {
        self.near.is_none() && !self.watches_expiry()
    }

    /// Whether a hit needs its entry's remaining time.
    pub(crate) fn watches_expiry(&self) -> bool {
        let Freshness {
            stale,
            early,
            fail_safe,
            per_entry,
            ..
        } = self.freshness;
        stale.is_some() || early.is_some() || fail_safe.is_some() || per_entry != PerEntry::No
    }

    /// This policy for an entry whose windows are `windows` (`None`: the entry says nothing):
    /// with them, if the policy takes each entry's own; with none, if it judges each entry by
    /// its expiry alone; as it is otherwise. Each window is bounded as the policy's own are,
    /// at most a day.
    pub(crate) fn for_entry(&self, windows: Option<Windows>) -> Policy {
        let mut policy = *self;
        if self.freshness.per_entry != PerEntry::No {
            let taken = windows.filter(|_| self.freshness.per_entry == PerEntry::Windows);
            let (stale, fail_safe) = taken.unwrap_or_default();
            let bounded = |w: Option<Duration>| w.map(|w| w.min(super::LONGEST));
            policy.freshness.stale = bounded(stale).filter(|w| !w.is_zero());
            policy.freshness.fail_safe = bounded(fail_safe).filter(|w| !w.is_zero());
        }
        policy
    }

    /// Whether each entry is judged by its own soft expiry.
    pub(crate) fn judges_entries(&self) -> bool {
        self.freshness.per_entry != PerEntry::No
    }

    /// What Redis keeps an entry for beyond its drawn TTL, in milliseconds: the longer of
    /// `stale` and `fail_safe`.
    pub(crate) fn kept_ms(&self) -> u64 {
        let Freshness {
            stale, fail_safe, ..
        } = self.freshness;
        let kept = stale.max(fail_safe);
        kept.map_or(0, |kept| {
            u64::try_from(kept.as_millis()).unwrap_or(u64::MAX)
        })
    }

    /// Whether an entry with `pttl_ms` left in Redis is past its TTL by no more than
    /// `fail_safe`.
    pub(crate) fn within_fail_safe(&self, pttl_ms: u64) -> bool {
        let past = self.kept_ms().saturating_sub(pttl_ms);
        self.freshness
            .fail_safe
            .is_some_and(|fail_safe| u128::from(past) <= fail_safe.as_millis())
    }

    /// What a hit of an entry with `pttl_ms` left in Redis, loaded in `load_ms`, is due for.
    pub(crate) fn due(&self, pttl_ms: u64, load_ms: u64) -> Due {
        let kept = self.kept_ms();
        let left = pttl_ms.saturating_sub(kept);
        if left == 0 && kept > 0 {
            // How long past its TTL the entry is.
            let past = kept - pttl_ms.min(kept);
            return match self.freshness.stale {
                Some(stale) if u128::from(past) <= stale.as_millis() => Due::Stale,
                _ => Due::Expired,
            };
        }
        match self.freshness.early {
            Some(beta) if draws_refresh(left, load_ms, beta) => Due::Early,
            Some(beta) => {
                let window = 3.0 * load_ms as f64 * f64::from(beta) / MILLION as f64;
                Due::Fresh(Duration::from_millis(left.saturating_sub(window as u64)))
            }
            None => Due::Fresh(Duration::from_millis(left)),
        }
    }
}

/// XFetch's draw: `load_ms × β × −ln(u) ≥ left_ms`, `u` uniform in (0, 1].
fn draws_refresh(left_ms: u64, load_ms: u64, beta_ppm: u32) -> bool {
    let u = ((random::next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let beta = f64::from(beta_ppm) / MILLION as f64;
    load_ms as f64 * beta * -u.ln() >= left_ms as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new("f", Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn the_stale_window_follows_the_ttl() {
        let p = policy().with_stale(Duration::from_secs(10)).unwrap();
        assert_eq!(p.due(15_000, 5), Due::Fresh(Duration::from_secs(5)));
        assert_eq!(p.due(10_000, 5), Due::Stale);
        assert_eq!(p.due(1, 5), Due::Stale);
        assert_eq!(policy().due(1, 5), Due::Fresh(Duration::from_millis(1)));
        let both = p.with_fail_safe(Duration::from_secs(30)).unwrap();
        assert_eq!(both.due(30_001, 5), Due::Fresh(Duration::from_millis(1)));
        assert_eq!(both.due(30_000, 5), Due::Stale, "at the TTL");
        assert_eq!(both.due(20_000, 5), Due::Stale, "10 s past: within stale");
        assert_eq!(
            both.due(15_000, 5),
            Due::Expired,
            "15 s past: within fail_safe only"
        );
        let alone = policy().with_fail_safe(Duration::from_secs(30)).unwrap();
        assert_eq!(alone.due(30_000, 5), Due::Expired);
        assert!(policy().with_fail_safe(Duration::MAX).is_err());
        assert!(policy().with_stale(Duration::ZERO).is_err());
        assert!(policy().with_stale(Duration::MAX).is_err(), "at most a day");
    }

    #[test]
    fn early_refresh_draws_more_often_as_expiry_nears() {
        let p = policy().with_early_refresh(1.0).unwrap();
        let share = |left: u64| {
            let early = (0..20_000)
                .filter(|_| p.due(left, 100) == Due::Early)
                .count();
            early as f64 / 20_000.0
        };
        // P(refresh) = exp(-left / (load × β)).
        for (left, expected) in [(0, 1.0), (100, (-1.0f64).exp()), (300, (-3.0f64).exp())] {
            assert!(
                (share(left) - expected).abs() < 0.02,
                "{left}: {}",
                share(left)
            );
        }
        assert_eq!(share(10_000), 0.0);
        // A near copy ends when the window opens: three load times × β before the TTL ends.
        assert_eq!(p.due(10_000, 100), Due::Fresh(Duration::from_millis(9_700)));
        let never = policy().with_early_refresh(1.0).unwrap();
        assert!(
            (0..1000).all(|_| never.due(1, 0) != Due::Early),
            "a load of 0 ms"
        );
        for beta in [0.0, -1.0, f64::NAN, f64::INFINITY, 1_000.5] {
            assert!(policy().with_early_refresh(beta).is_err(), "{beta}");
        }
    }
}
