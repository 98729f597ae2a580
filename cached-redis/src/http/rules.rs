//! What may be stored: which requests the layer answers from the cache, and what becomes of a
//! response (stored, shared with requests that waited for it, or its own caller's only).

use std::time::{Duration, SystemTime};

use ::http::header::{
    CONTENT_TYPE, IF_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, PRAGMA, RANGE, SET_COOKIE, VARY,
};
use ::http::{HeaderMap, HeaderName, Method, request, response};

use super::directives::Directives;
use super::freshness::{Freshness, Windows, freshness, stale_windows};
use super::{Config, credentials, host, key};

/// Request headers that ask for part of a resource or an answer that depends on it (a `206`,
/// a `412`): such answers are their own request's, never another's, and go to the handler.
/// `If-None-Match` and `If-Modified-Since` are the layer's to answer (`conditional.rs`).
const PARTIAL_OR_CONDITIONAL: [::http::HeaderName; 4] =
    [RANGE, IF_RANGE, IF_MATCH, IF_UNMODIFIED_SINCE];

/// The key a request is looked up under, or `None` when it must go to the handler uncached:
/// not a `GET` or `HEAD`, partial or conditional, asking that nothing of it be stored
/// (`Cache-Control: no-store`, or a `Cache-Control` that cannot be read), or carrying
/// credentials (`Authorization`, `Cookie`, an identity header a gateway sets; see
/// `credentials.rs`) the layer cannot attribute to a user, or one of them twice. Tenant
/// headers join the key. Every host the request names is part of
/// it; so is the user, whenever `key_by_user` names one, credentials or not.
pub(crate) fn request_key(parts: &request::Parts, config: &Config) -> Option<String> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return None;
    }
    let headers = &parts.headers;
    let partial = PARTIAL_OR_CONDITIONAL
        .iter()
        .any(|h| headers.contains_key(h));
    if partial || declares_a_body(headers) {
        return None;
    }
    if Directives::of(headers).is_none_or(|request| request.has("no-store")) {
        return None;
    }
    let base = host::with_hosts(key::base(&parts.method, &parts.uri), parts);
    let base = credentials::with_tenants(base, headers);
    let more = &config.credentials;
    if credentials::doubled(headers, more) {
        return None;
    }
    match config.user.as_ref().and_then(|user| user(parts)) {
        Some(user) => Some(key::with_part(base, "user", user.as_bytes())),
        None if credentials::carried(headers, more) => None,
        None => Some(base),
    }
}

/// Whether a request says it has a body (`Content-Length` above 0, or `Transfer-Encoding`):
/// a handler may read a `GET`'s body, which is not in the key.
fn declares_a_body(headers: &HeaderMap) -> bool {
    let length = headers.get(::http::header::CONTENT_LENGTH);
    headers.contains_key(::http::header::TRANSFER_ENCODING)
        || length.is_some_and(|l| l.as_bytes() != b"0")
}

/// What becomes of a handler's response.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Stored for `ttl`, and shared; `age`: how old it already was; `windows`: how long past
    /// `ttl` it says it may still answer.
    Store {
        ttl: Duration,
        age: Duration,
        windows: Windows,
    },
    /// Not stored, but shared with requests that waited for the same handler run.
    Share,
    /// Its own caller's only: personal, or not buffered.
    Alone,
    /// A server error (`500`, `502`, `503`, `504`, RFC 5861 §4) the layer was not told to
    /// store: its own caller's, unless a stored response may answer in its place.
    Error,
}

/// The statuses a stored response may answer in place of, with `stale-if-error`.
const ERRORS: [u16; 4] = [500, 502, 503, 504];

/// Whether a response with this head and `verdict` is its caller's only before its body is
/// read: then it streams through as the handler writes it (an event stream among them, and an
/// error).
pub(crate) fn streams_through(parts: &response::Parts, verdict: &Verdict) -> bool {
    let event_stream = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
    event_stream || matches!(verdict, Verdict::Alone | Verdict::Error)
}

/// The verdict on a response under `config` (its body already known to fit).
pub(crate) fn verdict(parts: &response::Parts, config: &Config) -> Verdict {
    let headers = &parts.headers;
    let status = &parts.status;
    if ERRORS.contains(&status.as_u16()) && !config.statuses.contains(status) {
        return Verdict::Error;
    }
    let (Some(cdn), Some(directives), Some(surrogate)) = (
        Directives::of_cdn(headers),
        Directives::of(headers),
        Directives::of_surrogate(headers),
    ) else {
        return Verdict::Alone;
    };
    let all = [&cdn, &surrogate, &directives];
    if personal(headers, all) || matches!(vary(headers), Vary::Any) {
        return Verdict::Alone;
    }
    // A response that may not be reused (stale on arrival: `max-age=0`, `Expires: 0`, an
    // unreadable date) is not handed to requests that waited either (RFC 9111 §4.2.4).
    let ttl = config.policy.ttl();
    let Freshness::Fresh { ttl, age } = freshness(headers, all, ttl, SystemTime::now()) else {
        return Verdict::Alone;
    };
    if !config.statuses.contains(status) {
        return Verdict::Share;
    }
    // What the response allows, stored with it whether this layer serves stale answers or
    // not: a layer that does not keeps it no longer, and reads it as fresh no longer.
    Verdict::Store {
        ttl,
        age,
        windows: stale_windows(all),
    }
}

/// Whether a response read from Redis is one the layer would have stored: nothing personal
/// and no `Vary: *` (an entry written by someone else with write access to Redis may not be).
pub(crate) fn may_replay(headers: &HeaderMap) -> bool {
    let read = [
        Directives::of_cdn(headers),
        Directives::of_surrogate(headers),
        Directives::of(headers),
    ];
    let [Some(cdn), Some(surrogate), Some(directives)] = read else {
        return false;
    };
    !personal(headers, [&cdn, &surrogate, &directives]) && vary(headers) != Vary::Any
}

/// Whether a response is for its own caller only: it sets a cookie, or says it is `private`,
/// `no-store` or `no-cache` (with a field list or without), in `CDN-Cache-Control`,
/// `Cache-Control` or `Surrogate-Control` (`Pragma: no-cache` too, and a `Pragma` that cannot
/// be read).
fn personal(headers: &HeaderMap, directives: [&Directives; 3]) -> bool {
    let pragma_no_cache = headers.get_all(PRAGMA).iter().any(|v| {
        v.to_str()
            .map_or(true, |v| v.to_ascii_lowercase().contains("no-cache"))
    });
    headers.contains_key(SET_COOKIE)
        || headers.contains_key("set-cookie2")
        || headers.keys().any(|name| carries_a_token(name.as_str()))
        || pragma_no_cache
        || PROHIBITIONS
            .iter()
            .any(|d| directives.iter().any(|of| of.has(d)))
        || mentions_a_prohibition(headers)
}

/// Whether a response header's name says it carries a per-visitor secret besides
/// `Set-Cookie`: a session or CSRF token, `Authentication-Info`'s next nonce.
/// `Proxy-Authentication-Info` is not one: it belongs to one connection's proxy
/// authentication, and is never stored with the response (RFC 9111 §3.1, `entry.rs`).
fn carries_a_token(name: &str) -> bool {
    let word = ["session", "token", "csrf", "xsrf", "authentication-info"]
        .iter()
        .any(|word| name.contains(word));
    (word && name != "proxy-authentication-info") || name.starts_with("x-auth")
}

/// What a response says to keep it from shared caches.
const PROHIBITIONS: [&str; 3] = ["private", "no-store", "no-cache"];

/// Whether one of the caching fields names a prohibition anywhere, read or not (inside a
/// quoted value, after a stray `;`): what nginx and Varnish also take as "do not store", the
/// backstop behind reading the directives exactly.
fn mentions_a_prohibition(headers: &HeaderMap) -> bool {
    let fields = ["cache-control", "cdn-cache-control", "surrogate-control"];
    fields.iter().flat_map(|f| headers.get_all(*f)).any(|line| {
        let line = String::from_utf8_lossy(line.as_bytes()).to_ascii_lowercase();
        PROHIBITIONS.iter().any(|word| line.contains(word))
    })
}

/// The header names a response's `Vary` lists.
#[derive(Debug, PartialEq)]
pub(crate) enum Vary {
    Names(Vec<HeaderName>),
    /// `Vary: *`: every request differs.
    Any,
}

/// The response's `Vary`, its names lower-cased, sorted and deduplicated.
pub(crate) fn vary(headers: &HeaderMap) -> Vary {
    let mut names = Vec::new();
    for value in headers.get_all(VARY) {
        for name in value.to_str().unwrap_or("*").split(',').map(str::trim) {
            if name == "*" {
                return Vary::Any;
            }
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => names.push(name),
                Err(_) if name.is_empty() => {}
                Err(_) => return Vary::Any,
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Vary::Names(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;
    use ::http::{Request, Response, StatusCode};

    fn config() -> Config {
        Config {
            policy: Policy::new("http", Duration::from_secs(30)).unwrap(),
            statuses: vec![StatusCode::OK],
            max_body: 1024,
            user: None,
            credentials: Vec::new(),
            invalidate_writes: true,
            etag: false,
            stale: true,
        }
    }

    fn respond(status: u16, headers: &[(&str, &str)]) -> Verdict {
        let mut response = Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(*name, *value);
        }
        verdict(&response.body(()).unwrap().into_parts().0, &config())
    }

    fn ask(method: &str, headers: &[(&str, &str)], config: &Config) -> Option<String> {
        let mut request = Request::builder().method(method).uri("/p?b=2&a=1");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request_key(&request.body(()).unwrap().into_parts().0, config)
    }

    #[test]
    fn personal_responses_are_their_callers_only() {
        assert_eq!(respond(200, &[]), store(30));
        assert_eq!(respond(200, &[("set-cookie", "s=1")]), Verdict::Alone);
        assert_eq!(
            respond(200, &[("cache-control", "private, max-age=60")]),
            Verdict::Alone
        );
        assert_eq!(
            respond(200, &[("cache-control", "no-store")]),
            Verdict::Alone
        );
        assert_eq!(
            respond(200, &[("Cache-Control", "No-Cache")]),
            Verdict::Alone
        );
        assert_eq!(respond(200, &[("vary", "*")]), Verdict::Alone);
        assert_eq!(respond(404, &[]), Verdict::Share);
        assert_eq!(respond(503, &[]), Verdict::Error);
        assert_eq!(respond(503, &[("set-cookie", "s=1")]), Verdict::Error);
        assert_eq!(
            respond(501, &[]),
            Verdict::Share,
            "not an error RFC 5861 names"
        );
        assert_eq!(respond(404, &[("set-cookie", "s=1")]), Verdict::Alone);
        assert_eq!(respond(200, &[("pragma", "no-cache")]), Verdict::Alone);
        assert_eq!(
            respond(200, &[("cache-control", "no-cache=\"set-cookie\"")]),
            Verdict::Alone
        );
    }

    fn store(secs: u64) -> Verdict {
        Verdict::Store {
            ttl: Duration::from_secs(secs),
            age: Duration::ZERO,
            windows: (None, None),
        }
    }

    #[test]
    fn headers_that_cannot_be_read_are_never_taken_to_allow_storing() {
        let with = |name: &str, value: &[u8]| {
            let response =
                Response::builder().header(name, ::http::HeaderValue::from_bytes(value).unwrap());
            verdict(&response.body(()).unwrap().into_parts().0, &config())
        };
        let private = b"private, max-age=60, x-owner=\"Jos\xe9\"";
        assert_eq!(with("cache-control", private), Verdict::Alone);
        assert_eq!(with("vary", b"x-tenant\xe9"), Verdict::Alone);
        assert_eq!(with("pragma", b"x\xe9"), Verdict::Alone);
        assert_eq!(with("expires", b"\xe9"), Verdict::Alone);
        assert_eq!(with("cdn-cache-control", b"x=\xe9"), Verdict::Alone);
        assert_eq!(with("cdn-cache-control", b"private"), Verdict::Alone);
        assert_eq!(with("surrogate-control", b"no-store"), Verdict::Alone);
        for sloppy in [
            &b"private; max-age=0"[..],
            b"private max-age=600",
            b"\"private\"",
        ] {
            let said = String::from_utf8_lossy(sloppy);
            assert_eq!(with("cache-control", sloppy), Verdict::Alone, "{said}");
        }
        assert_eq!(with("cache-control", b"max-age=-1"), Verdict::Alone);
        assert_eq!(with("x-csrf-token", b"abc"), Verdict::Alone);
        assert_eq!(with("authentication-info", b"nextnonce=1"), Verdict::Alone);
        let per_connection = with("proxy-authentication-info", b"nextnonce=1");
        assert!(
            matches!(per_connection, Verdict::Store { .. }),
            "dropped when stored"
        );
    }

    #[test]
    fn a_shorter_max_age_wins() {
        assert_eq!(
            respond(200, &[("cache-control", "public, max-age=5")]),
            store(5)
        );
        assert_eq!(respond(200, &[("cache-control", "max-age=500")]), store(30));
        assert_eq!(
            respond(200, &[("cache-control", "max-age=0")]),
            Verdict::Alone,
            "not reused by requests that waited either"
        );
    }

    #[test]
    fn requests_with_credentials_are_cached_only_by_user() {
        let plain = config();
        assert_eq!(
            ask("GET", &[], &plain).as_deref(),
            Some("http:GET:/p?a=1&b=2")
        );
        assert_eq!(
            ask("GET", &[("host", "A.example.com")], &plain).as_deref(),
            Some("http:GET:/p?a=1&b=2|host=A.example.com")
        );
        assert_eq!(ask("GET", &[("range", "bytes=0-1")], &plain), None);
        assert_eq!(ask("GET", &[("if-match", "\"x\"")], &plain), None);
        assert_eq!(
            ask("GET", &[("if-none-match", "\"x\"")], &plain).as_deref(),
            Some("http:GET:/p?a=1&b=2"),
            "the layer answers If-None-Match itself, under the same key"
        );
        assert_eq!(
            ask("HEAD", &[], &plain).as_deref(),
            Some("http:HEAD:/p?a=1&b=2")
        );
        assert_eq!(ask("POST", &[], &plain), None);
        assert_eq!(ask("GET", &[("authorization", "Bearer x")], &plain), None);
        assert_eq!(ask("GET", &[("cookie", "s=1")], &plain), None);
        let mut by_user = config();
        by_user.user = Some(std::sync::Arc::new(|parts: &request::Parts| {
            parts
                .headers
                .get("x-user")
                .map(|u| u.to_str().unwrap().to_owned())
        }));
        assert_eq!(
            ask("GET", &[("cookie", "s=1"), ("x-user", "7")], &by_user).as_deref(),
            Some("http:GET:/p?a=1&b=2|user=7")
        );
        assert_eq!(ask("GET", &[("cookie", "s=1")], &by_user), None);
        assert_eq!(
            ask("GET", &[("x-user", "8")], &by_user).as_deref(),
            Some("http:GET:/p?a=1&b=2|user=8"),
            "the user is asked without credentials too"
        );
        assert_eq!(
            ask("GET", &[], &by_user).as_deref(),
            Some("http:GET:/p?a=1&b=2"),
            "no user and no credentials: shared"
        );
        assert_eq!(ask("GET", &[("cache-control", "no-store")], &plain), None);
    }

    #[test]
    fn vary_names_are_normalised() {
        let mut headers = HeaderMap::new();
        headers.append(VARY, "Accept-Language, accept".parse().unwrap());
        headers.append(VARY, "accept".parse().unwrap());
        let names = |v: Vary| match v {
            Vary::Names(names) => names
                .iter()
                .map(|n| n.as_str().to_owned())
                .collect::<Vec<_>>(),
            Vary::Any => vec!["*".into()],
        };
        assert_eq!(names(vary(&headers)), ["accept", "accept-language"]);
        headers.append(VARY, "*".parse().unwrap());
        assert_eq!(vary(&headers), Vary::Any);
    }
}
