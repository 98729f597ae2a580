//! How long a response may be stored, from its own headers (RFC 9111 §4.2): `s-maxage`, then
//! `max-age`, then `Expires` less `Date`, less the age it already has (`Age`, or how old its
//! `Date` says it is). The layer's TTL bounds it, and applies alone to a response that says
//! nothing. Freshness information that cannot be read makes the response stale: not stored.

use std::time::{Duration, SystemTime};

use ::http::HeaderMap;
use ::http::header::{AGE, DATE, EXPIRES};

use super::directives::{Directives, delta_seconds};

/// A response's freshness, as far as the layer is concerned.
#[derive(Debug, PartialEq)]
pub(crate) enum Freshness {
    /// It may be stored for `ttl`, and is `age` old already.
    Fresh { ttl: Duration, age: Duration },
    /// It may not be served from the cache: expired, or its freshness unreadable.
    Stale,
}

/// The freshness of a response with `headers` and `directives`, received `now`, under the
/// layer's `ttl`.
pub(crate) fn freshness(
    headers: &HeaderMap,
    directives: &Directives,
    ttl: Duration,
    now: SystemTime,
) -> Freshness {
    let Some(date) = date(headers) else {
        return Freshness::Stale;
    };
    let Some(age) = current_age(headers, date, now) else {
        return Freshness::Stale;
    };
    // A shared cache takes s-maxage over max-age, and either over Expires.
    let lifetime = match directives
        .seconds("s-maxage")
        .or_else(|| directives.seconds("max-age"))
    {
        Some(Some(secs)) => Some(Duration::from_secs(secs)),
        Some(None) => return Freshness::Stale,
        None => match expires(headers) {
            Some(Some(expires)) => Some(time_between(date.unwrap_or(now), expires)),
            Some(None) => return Freshness::Stale,
            None => None,
        },
    };
    let ttl = match lifetime {
        Some(lifetime) => ttl.min(lifetime.saturating_sub(age)),
        None => ttl,
    };
    if ttl < Duration::from_millis(1) {
        return Freshness::Stale;
    }
    Freshness::Fresh { ttl, age }
}

/// The response's `Date`: `Some(None)` when it has none, `None` when it cannot be read.
fn date(headers: &HeaderMap) -> Option<Option<SystemTime>> {
    match headers.get(DATE) {
        None => Some(None),
        Some(value) => http_date(value.as_bytes()).map(Some),
    }
}

/// How old the response is on arrival: the larger of its `Age` and its `Date`'s distance to
/// `now`; `None` when an `Age` is not a number.
fn current_age(headers: &HeaderMap, date: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    let mut age = date.map_or(Duration::ZERO, |date| time_between(date, now));
    for value in headers.get_all(AGE) {
        let secs = delta_seconds(value.to_str().ok()?.trim())?;
        age = age.max(Duration::from_secs(secs));
    }
    Some(age)
}

/// The earliest `Expires`: `None` when absent, `Some(None)` when one cannot be read (`0`
/// among them: already expired, RFC 9111 §5.3).
fn expires(headers: &HeaderMap) -> Option<Option<SystemTime>> {
    let mut earliest = None;
    for value in headers.get_all(EXPIRES) {
        let Some(at) = http_date(value.as_bytes()) else {
            return Some(None);
        };
        earliest = Some(earliest.map_or(at, |e: SystemTime| e.min(at)));
    }
    earliest.map(Some)
}

fn http_date(bytes: &[u8]) -> Option<SystemTime> {
    httpdate::parse_http_date(std::str::from_utf8(bytes).ok()?.trim()).ok()
}

/// `to - from`, or zero when `to` is earlier.
fn time_between(from: SystemTime, to: SystemTime) -> Duration {
    to.duration_since(from).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    fn fresh(headers: &[(&str, &str)]) -> Freshness {
        let now = httpdate::parse_http_date("Sat, 05 Dec 2026 08:00:00 GMT").unwrap();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                ::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        freshness(&map, &Directives::of(&map).unwrap(), TTL, now)
    }

    fn stored(ttl: u64, age: u64) -> Freshness {
        Freshness::Fresh {
            ttl: Duration::from_secs(ttl),
            age: Duration::from_secs(age),
        }
    }

    #[test]
    fn the_layers_ttl_bounds_what_the_response_allows() {
        assert_eq!(fresh(&[]), stored(30, 0));
        assert_eq!(fresh(&[("cache-control", "max-age=5")]), stored(5, 0));
        assert_eq!(fresh(&[("cache-control", "max-age=500")]), stored(30, 0));
        let both = ("cache-control", "max-age=5, s-maxage=7");
        assert_eq!(fresh(&[both]), stored(7, 0));
        assert_eq!(fresh(&[("cache-control", "max-age=0")]), Freshness::Stale);
    }

    #[test]
    fn its_age_counts_against_its_lifetime() {
        let max_age = ("cache-control", "max-age=60");
        assert_eq!(fresh(&[max_age, ("age", "50")]), stored(10, 50));
        assert_eq!(fresh(&[max_age, ("age", "60")]), Freshness::Stale);
        assert_eq!(fresh(&[("age", "100")]), stored(30, 100));
        let old = ("date", "Sat, 05 Dec 2026 07:59:20 GMT");
        assert_eq!(fresh(&[max_age, old]), stored(20, 40));
        assert_eq!(fresh(&[max_age, ("age", "x")]), Freshness::Stale);
    }

    #[test]
    fn expires_counts_from_date_and_an_unreadable_one_is_expired() {
        let date = ("date", "Sat, 05 Dec 2026 08:00:00 GMT");
        let expires = |at| ("expires", at);
        assert_eq!(
            fresh(&[date, expires("Sat, 05 Dec 2026 08:00:10 GMT")]),
            stored(10, 0)
        );
        assert_eq!(
            fresh(&[expires("Sat, 05 Dec 2026 08:00:10 GMT")]),
            stored(10, 0)
        );
        assert_eq!(
            fresh(&[date, expires("Sat, 05 Dec 2026 07:00:00 GMT")]),
            Freshness::Stale
        );
        assert_eq!(fresh(&[expires("0")]), Freshness::Stale);
        assert_eq!(
            fresh(&[date, expires("Sat, 05 Dec 2026 08:00:00 GMT")]),
            Freshness::Stale
        );
        let max_age = ("cache-control", "max-age=5");
        assert_eq!(
            fresh(&[max_age, expires("0")]),
            stored(5, 0),
            "max-age wins"
        );
        assert_eq!(fresh(&[("date", "yesterday")]), Freshness::Stale);
    }
}
