//! What may be stored: which requests the layer answers from the cache, and what becomes of a
//! response (stored, shared with requests that waited for it, or its own caller's only).

use std::time::Duration;

use ::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, IF_MATCH, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE, SET_COOKIE, VARY,
};
use ::http::{HeaderMap, HeaderName, Method, request, response};

use super::{Config, key};

/// Request headers that ask for part of a resource or a conditional answer (a `206`, a `304`):
/// such answers are their own request's, never another's.
const PARTIAL_OR_CONDITIONAL: [::http::HeaderName; 6] = [
    RANGE,
    IF_RANGE,
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    IF_MATCH,
    IF_UNMODIFIED_SINCE,
];

/// The key a request is looked up under, or `None` when it must go to the handler uncached:
/// not a `GET` or `HEAD`, partial or conditional, or carrying credentials the layer cannot
/// attribute to a user. The host (`Host`, or the URI's authority) is part of it.
pub(crate) fn request_key(parts: &request::Parts, config: &Config) -> Option<String> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return None;
    }
    if PARTIAL_OR_CONDITIONAL
        .iter()
        .any(|h| parts.headers.contains_key(h))
    {
        return None;
    }
    let mut base = key::base(&parts.method, &parts.uri);
    let host = parts.headers.get(HOST).and_then(|h| h.to_str().ok());
    if let Some(host) = host.or_else(|| parts.uri.authority().map(|a| a.as_str())) {
        base = key::for_host(base, host);
    }
    let personal = parts.headers.contains_key(AUTHORIZATION) || parts.headers.contains_key(COOKIE);
    match (&config.user, personal) {
        (_, false) => Some(base),
        (None, true) => None,
        (Some(user), true) => user(parts).map(|user| key::for_user(base, &user)),
    }
}

/// What becomes of a handler's response.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Stored for this long, and shared.
    Store(Duration),
    /// Not stored, but shared with requests that waited for the same handler run.
    Share,
    /// Its own caller's only: personal, or not buffered.
    Alone,
}

/// Whether a response with this head and `verdict` is its caller's only before its body is
/// read: then it streams through as the handler writes it (an event stream among them).
pub(crate) fn streams_through(parts: &response::Parts, verdict: &Verdict) -> bool {
    let event_stream = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    event_stream || *verdict == Verdict::Alone
}

/// The verdict on a response under `config` (its body already known to fit).
pub(crate) fn verdict(parts: &response::Parts, config: &Config) -> Verdict {
    let headers = &parts.headers;
    let directives = cache_control(headers);
    let has = |name: &str| directives.iter().any(|(d, _)| d == name);
    if headers.contains_key(SET_COOKIE) || has("private") || has("no-store") || has("no-cache") {
        return Verdict::Alone;
    }
    if matches!(vary(headers), Vary::Any) {
        return Verdict::Alone;
    }
    if !config.statuses.contains(&parts.status) {
        return Verdict::Share;
    }
    // A shared cache takes s-maxage over max-age.
    let age = |name: &str| {
        directives
            .iter()
            .find(|(d, _)| d == name)
            .and_then(|(_, v)| v.as_deref()?.parse::<u64>().ok())
    };
    let ttl = config.policy.ttl();
    match age("s-maxage").or_else(|| age("max-age")) {
        Some(0) => Verdict::Share,
        Some(secs) => Verdict::Store(ttl.min(Duration::from_secs(secs))),
        None => Verdict::Store(ttl),
    }
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

/// `Cache-Control`'s directives, lower-cased, with their values unquoted.
fn cache_control(headers: &HeaderMap) -> Vec<(String, Option<String>)> {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|directive| {
            let mut parts = directive.splitn(2, '=');
            let name = parts.next()?.trim().to_ascii_lowercase();
            let value = parts.next().map(|v| v.trim().trim_matches('"').to_owned());
            (!name.is_empty()).then_some((name, value))
        })
        .collect()
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
        assert_eq!(respond(200, &[]), Verdict::Store(Duration::from_secs(30)));
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
        assert_eq!(respond(404, &[("set-cookie", "s=1")]), Verdict::Alone);
    }

    #[test]
    fn a_shorter_max_age_wins() {
        let store = |s| Verdict::Store(Duration::from_secs(s));
        assert_eq!(
            respond(200, &[("cache-control", "public, max-age=5")]),
            store(5)
        );
        assert_eq!(respond(200, &[("cache-control", "max-age=500")]), store(30));
        assert_eq!(
            respond(200, &[("cache-control", "max-age=50, s-maxage=\"7\"")]),
            store(7)
        );
        assert_eq!(
            respond(200, &[("cache-control", "max-age=0")]),
            Verdict::Share
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
            Some("http:GET:/p?a=1&b=2|host=a.example.com")
        );
        assert_eq!(ask("GET", &[("range", "bytes=0-1")], &plain), None);
        assert_eq!(ask("GET", &[("if-none-match", "\"x\"")], &plain), None);
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
