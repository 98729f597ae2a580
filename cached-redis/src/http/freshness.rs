//! How long a response may be stored, from its own headers (RFC 9111 §4.2, RFC 9213):
//! `CDN-Cache-Control`'s `s-maxage` or `max-age`, then `Surrogate-Control`'s, then
//! `Cache-Control`'s, then `Expires` less
//! `Date`, or the layer's TTL for a response that says nothing; less the age it already has
//! (its first `Age`, or how old its `Date` says it is). The layer's TTL bounds it. Freshness
//! information that cannot be read makes the response stale: not stored. (An `Age` that is
//! not a number is ignored, as RFC 9111 §5.1 has it.)
//!
//! How long past that a stored response may still answer ([`stale_windows`], RFC 5861): while
//! it is refreshed (`stale-while-revalidate`), and in place of a handler's error
//! (`stale-if-error`).

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
    [cdn, surrogate, directives]: [&Directives; 3],
    ttl: Duration,
    now: SystemTime,
) -> Freshness {
    let Some(date) = date(headers) else {
        return Freshness::Stale;
    };
    let age = current_age(headers, date, now);
    // A shared cache takes s-maxage over max-age, CDN-Cache-Control's over Cache-Control's,
    // and either over Expires.
    // A CDN-Cache-Control that is not a valid structured field is ignored for its lifetime
    // (RFC 9213 §2.1); what it forbids still counts (`rules.rs`).
    let cdn = explicit(cdn).filter(|_| cdn.exact());
    let chosen = cdn
        .or_else(|| explicit(surrogate))
        .or_else(|| explicit(directives));
    let lifetime = match chosen {
        Some(Some(secs)) => Duration::from_secs(secs),
        Some(None) => return Freshness::Stale,
        None => match expires(headers) {
            Some(Some(expires)) => time_between(date.unwrap_or(now), expires),
            Some(None) => return Freshness::Stale,
            None => ttl,
        },
    };
    let ttl = ttl.min(lifetime.saturating_sub(age));
    if ttl < Duration::from_millis(1) {
        return Freshness::Stale;
    }
    Freshness::Fresh { ttl, age }
}

/// How long past its freshness a response may be served while the handler refreshes it
/// (`stale-while-revalidate`), and in place of the handler's error (`stale-if-error`), each
/// from the first of `CDN-Cache-Control` (when valid), `Surrogate-Control` and
/// `Cache-Control` that has it; a value that is not a number gives no window. None at all for
/// a response that forbids serving it stale (RFC 9111 §4.2.4): `must-revalidate`,
/// `proxy-revalidate` or `s-maxage`, in any of them. Each window is at most a day.
pub(crate) fn stale_windows([cdn, surrogate, directives]: [&Directives; 3]) -> Windows {
    let all = [cdn, surrogate, directives];
    let forbidden = ["must-revalidate", "proxy-revalidate", "s-maxage"];
    if forbidden.iter().any(|d| all.iter().any(|of| of.has(d))) {
        return (None, None);
    }
    let valid_cdn = cdn.exact().then_some(cdn);
    let window = |name: &str| {
        let first = [valid_cdn, Some(surrogate), Some(directives)]
            .into_iter()
            .flatten()
            .find_map(|of| of.seconds(name))?;
        first
            .filter(|secs| *secs > 0)
            .map(|secs| Duration::from_secs(secs).min(LONGEST_WINDOW))
    };
    (window("stale-while-revalidate"), window("stale-if-error"))
}

/// The longest stale window a response may have: a day.
pub(crate) const LONGEST_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Stale windows: how long past its freshness a response may answer while it is refreshed,
/// and in place of an error.
pub(crate) type Windows = (Option<Duration>, Option<Duration>);

/// `s-maxage`, else `max-age`: `Some(None)` when the one that applies is not a number.
fn explicit(directives: &Directives) -> Option<Option<u64>> {
    directives
        .seconds("s-maxage")
        .or_else(|| directives.seconds("max-age"))
}

/// The response's `Date`: `Some(None)` when it has none, `None` when it cannot be read.
fn date(headers: &HeaderMap) -> Option<Option<SystemTime>> {
    match headers.get(DATE) {
        None => Some(None),
        Some(value) => http_date(value.as_bytes()).map(Some),
    }
}

/// How old the response is on arrival: the larger of its `Age` (the first value of the first
/// line; one that is not a number is ignored) and its `Date`'s distance to `now`.
fn current_age(headers: &HeaderMap, date: Option<SystemTime>, now: SystemTime) -> Duration {
    let apparent = date.map_or(Duration::ZERO, |date| time_between(date, now));
    let first = headers.get(AGE).and_then(|value| {
        let first = value.to_str().ok()?.split(',').next()?;
        delta_seconds(first.trim())
    });
    apparent.max(Duration::from_secs(first.unwrap_or(0)))
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

pub(crate) fn http_date(bytes: &[u8]) -> Option<SystemTime> {
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

    /// `headers` as a map, and their `CDN-Cache-Control`, `Surrogate-Control` and
    /// `Cache-Control` directives, to `judge`.
    fn read<T>(headers: &[(&str, &str)], judge: impl Fn(&HeaderMap, [&Directives; 3]) -> T) -> T {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                ::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let cdn = Directives::of_cdn(&map).unwrap();
        let surrogate = Directives::of_surrogate(&map).unwrap();
        let directives = Directives::of(&map).unwrap();
        judge(&map, [&cdn, &surrogate, &directives])
    }

    fn fresh(headers: &[(&str, &str)]) -> Freshness {
        let now = httpdate::parse_http_date("Sat, 05 Dec 2026 08:00:00 GMT").unwrap();
        read(headers, |map, all| freshness(map, all, TTL, now))
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
        assert_eq!(
            fresh(&[("age", "10")]),
            stored(20, 10),
            "against the layer's TTL too"
        );
        assert_eq!(fresh(&[("age", "100")]), Freshness::Stale);
        let old = ("date", "Sat, 05 Dec 2026 07:59:20 GMT");
        assert_eq!(fresh(&[max_age, old]), stored(20, 40));
        for ignored in ["x", "-7200", "7200.0"] {
            assert_eq!(
                fresh(&[max_age, ("age", ignored)]),
                stored(30, 0),
                "{ignored}"
            );
        }
        assert_eq!(
            fresh(&[max_age, ("age", "0, 7200")]),
            stored(30, 0),
            "the first"
        );
        assert_eq!(
            fresh(&[max_age, ("age", "0"), ("age", "7200")]),
            stored(30, 0)
        );
        assert_eq!(fresh(&[max_age, ("age", "7200, 0")]), Freshness::Stale);
    }

    #[test]
    fn cdn_cache_control_comes_first() {
        let cdn = |v| ("cdn-cache-control", v);
        let cc = ("cache-control", "max-age=10000");
        assert_eq!(fresh(&[cdn("max-age=5"), cc]), stored(5, 0));
        assert_eq!(
            fresh(&[
                cdn("max-age=0"),
                ("expires", "Sun, 06 Dec 2026 08:00:00 GMT")
            ]),
            Freshness::Stale
        );
        assert_eq!(
            fresh(&[cdn("max-age=3600"), ("age", "7200")]),
            Freshness::Stale
        );
        assert_eq!(
            fresh(&[cdn("public"), ("cache-control", "max-age=5")]),
            stored(5, 0)
        );
        let surrogate = ("surrogate-control", "max-age=0");
        assert_eq!(
            fresh(&[surrogate, ("cache-control", "max-age=60")]),
            Freshness::Stale
        );
        let one = ("cache-control", "max-age=1");
        assert_eq!(
            fresh(&[cdn("max-age =100"), one]),
            stored(1, 0),
            "invalid: ignored"
        );
        assert_eq!(fresh(&[cdn("max-age= 100"), one]), stored(1, 0));
    }

    fn windows(headers: &[(&str, &str)]) -> Windows {
        read(headers, |_, all| stale_windows(all))
    }

    #[test]
    fn stale_windows_come_from_the_response_unless_it_forbids_them() {
        let secs = |s| Some(Duration::from_secs(s));
        fn cc(v: &str) -> (&'static str, &str) {
            ("cache-control", v)
        }
        assert_eq!(windows(&[cc("max-age=1")]), (None, None));
        assert_eq!(
            windows(&[cc(
                "max-age=1, stale-while-revalidate=30, stale-if-error=600"
            )]),
            (secs(30), secs(600))
        );
        assert_eq!(
            windows(&[cc("stale-while-revalidate=30, stale-while-revalidate=10")]),
            (secs(10), None),
            "the least"
        );
        for none in [
            "stale-if-error=-1",
            "stale-if-error=\"60\"",
            "stale-if-error",
            "stale-if-error=0",
        ] {
            assert_eq!(windows(&[cc(none)]), (None, None), "{none}");
        }
        assert_eq!(
            windows(&[cc("stale-if-error=99999999999")]),
            (None, secs(24 * 60 * 60)),
            "at most a day"
        );
        for forbids in ["must-revalidate", "proxy-revalidate", "s-maxage=60"] {
            let line =
                format!("max-age=1, stale-while-revalidate=30, stale-if-error=60, {forbids}");
            assert_eq!(windows(&[cc(&line)]), (None, None), "{forbids}");
        }
        let cdn = ("cdn-cache-control", "stale-if-error=5");
        assert_eq!(
            windows(&[cdn, cc("stale-if-error=600, stale-while-revalidate=9")]),
            (secs(9), secs(5)),
            "CDN-Cache-Control first, each directive on its own"
        );
        let invalid = ("cdn-cache-control", "stale-if-error =5");
        assert_eq!(
            windows(&[invalid, cc("stale-if-error=600")]),
            (None, secs(600))
        );
        let cdn_forbids = ("cdn-cache-control", "must-revalidate");
        assert_eq!(
            windows(&[cdn_forbids, cc("stale-if-error=600")]),
            (None, None)
        );
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
