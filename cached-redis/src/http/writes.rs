//! Unsafe methods invalidate (RFC 9111 §4.4): a `POST`, `PUT`, `PATCH`, `DELETE` (any method
//! but `GET`, `HEAD`, `OPTIONS` and `TRACE`) answered with a non-error status removes the
//! stored responses to its URL, and to the URLs its `Location` and `Content-Location` name
//! on the same host, with every variant (hosts, users, `Vary`), in every process.

use ::http::header::{CONTENT_LOCATION, HOST, LOCATION};
use ::http::request::Parts;
use ::http::{HeaderMap, Method, StatusCode, Uri};

use super::key;
use crate::{Cache, Error, Key};

/// Whether `method` may change the resource (RFC 9110 §9.2.1: not a safe method).
pub(crate) fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// What an unsafe request's answer invalidates: its own URL, then the same host's URLs its
/// `Location` and `Content-Location` name; nothing for an error status (4xx, 5xx) or a 1xx.
pub(crate) fn targets(request: &Request, status: StatusCode, headers: &HeaderMap) -> Vec<Uri> {
    if !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let mut targets = vec![request.uri.clone()];
    for name in [LOCATION, CONTENT_LOCATION] {
        let named = headers.get(&name).and_then(|v| v.to_str().ok());
        let uri = named.and_then(|v| v.parse::<Uri>().ok());
        if let Some(uri) = uri.filter(|uri| same_host(request, uri)) {
            targets.push(uri);
        }
    }
    targets
}

/// What [`targets`] reads of an unsafe request: its URI and headers, kept while the handler
/// has the request.
pub(crate) struct Request {
    uri: Uri,
    headers: HeaderMap,
}

impl Request {
    pub(crate) fn of(parts: &Parts) -> Request {
        Request {
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        }
    }
}

/// Whether `uri` (relative, or absolute) is on the request's host: the host part of a URI
/// that names another is not this cache's to invalidate (RFC 9111 §4.4).
fn same_host(request: &Request, uri: &Uri) -> bool {
    let Some(host) = uri.host() else {
        // A path: on the request's host.
        return uri.path().starts_with('/');
    };
    let requested = request.uri.host().or_else(|| {
        let header = request.headers.get(HOST)?.to_str().ok()?;
        Some(header.rsplit_once(':').map_or(header, |(host, _)| host))
    });
    requested.is_some_and(|requested| requested.eq_ignore_ascii_case(host))
}

/// Removes the stored `GET` and `HEAD` responses to `uri` (its path and query), with every
/// variant, and revokes the handler runs in flight for them. Every removal is sent even when
/// one fails (each one Redis does not take is kept and replayed); the first failure is the
/// answer. Returns whether anything was removed.
pub(crate) async fn remove_resource(cache: &Cache, uri: &Uri) -> Result<bool, Error> {
    remove(cache, [Method::GET, Method::HEAD], uri).await
}

/// [`remove_resource`] for the responses to `methods`.
pub(crate) async fn remove<const N: usize>(
    cache: &Cache,
    methods: [Method; N],
    uri: &Uri,
) -> Result<bool, Error> {
    let mut removed = Ok(false);
    for method in methods {
        let base = key::base(&method, uri);
        let entry = cache.invalidate(&Key::raw(base.clone())).await;
        let variants = cache.invalidate_prefix(&key::variants_of(&base)).await;
        removed = match (removed, entry, variants.map(|n| n > 0)) {
            (Ok(any), Ok(entry), Ok(variants)) => Ok(any || entry || variants),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
        };
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, host: &str) -> Request {
        let (parts, ()) = ::http::Request::post(uri)
            .header(HOST, host)
            .body(())
            .unwrap()
            .into_parts();
        Request::of(&parts)
    }

    fn answer(location: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(LOCATION, location.parse().unwrap());
        headers
    }

    #[test]
    fn the_targets_are_the_url_and_locations_on_its_host() {
        let post = request("/a", "shop.example:8080");
        let targets = |status, location| targets(&post, status, &answer(location));
        assert_eq!(targets(StatusCode::CREATED, "/b"), ["/a", "/b"]);
        let same = targets(StatusCode::SEE_OTHER, "http://SHOP.example/c");
        assert_eq!(same, ["/a", "http://SHOP.example/c"]);
        assert_eq!(targets(StatusCode::OK, "https://other.example/d"), ["/a"]);
        assert_eq!(targets(StatusCode::OK, "relative"), ["/a"]);
        assert!(targets(StatusCode::NOT_FOUND, "/b").is_empty());
        assert!(targets(StatusCode::CONTINUE, "/b").is_empty());
    }

    #[test]
    fn safe_methods_invalidate_nothing() {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(!is_unsafe(&method), "{method}");
        }
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_unsafe(&method), "{method}");
        }
        assert!(is_unsafe(&Method::from_bytes(b"PURGE").unwrap()));
    }
}
