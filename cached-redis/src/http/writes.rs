//! Unsafe methods invalidate (RFC 9111 §4.4): a `POST`, `PUT`, `PATCH`, `DELETE` (any method
//! but `GET`, `HEAD`, `OPTIONS` and `TRACE`) answered with a non-error status removes the
//! stored responses to its URL, and to the URLs its `Location` and `Content-Location` name
//! on the same host, with every variant (hosts, users, `Vary`), in every process.

use ::http::header::{CONTENT_LOCATION, LOCATION};
use ::http::request::Parts;
use ::http::{HeaderMap, Method, StatusCode, Uri};

use super::{host, key};
use crate::{Cache, Error, Key};

/// Whether `method` may change the resource (RFC 9110 §9.2.1: not a safe method).
pub(crate) fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// What an unsafe request's answer invalidates: its own URL, then the URLs its `Location` and
/// `Content-Location` name (resolved against the URL the client sent, RFC 9110 §10.2.2) on a
/// host the request names, as the layer sees them (a nest's prefix taken off); nothing for an
/// error status (4xx, 5xx) or a 1xx.
pub(crate) fn targets(request: &Request, status: StatusCode, headers: &HeaderMap) -> Vec<Uri> {
    if !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let mut targets = vec![request.uri.clone()];
    for name in [LOCATION, CONTENT_LOCATION] {
        let named = headers.get(&name).and_then(|v| v.to_str().ok());
        if let Some(uri) = named.and_then(|named| request.resolve(named)) {
            targets.push(uri);
        }
    }
    targets
}

/// What [`targets`] reads of an unsafe request, kept while the handler has the request: the
/// URI the layer sees, the path the client sent (when a router stripped a prefix), and every
/// host the request names (its URI's, `Host`, `X-Forwarded-Host`, `Forwarded`'s `host`).
pub(crate) struct Request {
    uri: Uri,
    sent_path: String,
    /// The prefix a router took off the path (`/t/acme` of `/t/acme/items/2`), if any.
    prefix: Option<String>,
    hosts: Vec<String>,
}

impl Request {
    pub(crate) fn of(parts: &Parts) -> Request {
        let seen = parts.uri.path();
        let sent = host::original_uri(parts)
            .and_then(|original| original.parse::<Uri>().ok())
            .map_or_else(|| seen.to_owned(), |original| original.path().to_owned());
        let prefix = sent
            .strip_suffix(seen)
            .filter(|prefix| !prefix.is_empty() && seen.starts_with('/'))
            .map(str::to_owned);
        Request {
            uri: parts.uri.clone(),
            sent_path: sent,
            prefix,
            hosts: host::names(parts),
        }
    }

    /// The URI, as the layer sees it, of a same-host `reference` from the response.
    fn resolve(&self, reference: &str) -> Option<Uri> {
        let reference = reference.split('#').next().unwrap_or_default();
        let (host, path_and_query) = split_reference(reference)?;
        if let Some(host) = host {
            let host = host.to_ascii_lowercase();
            if !self.hosts.contains(&host) {
                return None;
            }
        }
        let absolute = match path_and_query.chars().next() {
            Some('/') => path_and_query.to_owned(),
            Some('?') => format!("{}{path_and_query}", self.sent_path),
            _ => merged(&self.sent_path, path_and_query),
        };
        let (path, query) = absolute
            .split_once('?')
            .map_or((absolute.as_str(), None), |(p, q)| (p, Some(q)));
        let path = without_dot_segments(path);
        let path = match &self.prefix {
            Some(prefix) => match path.strip_prefix(prefix.as_str()) {
                Some(rest) if rest.starts_with('/') => rest.to_owned(),
                Some("") => "/".to_owned(),
                _ => path,
            },
            None => path,
        };
        let path_and_query = match query {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        path_and_query.parse().ok()
    }
}

/// A reference's host (lowercased later), if it names one, and its path and query.
fn split_reference(reference: &str) -> Option<(Option<&str>, &str)> {
    let after_scheme = ["http://", "https://"]
        .iter()
        .find_map(|scheme| strip_prefix_ignore_case(reference, scheme));
    let authority_and_rest = match after_scheme {
        Some(rest) => rest,
        None => match reference.strip_prefix("//") {
            Some(rest) => rest,
            None if reference.contains("://") => return None,
            None => return Some((None, reference)),
        },
    };
    let end = authority_and_rest
        .find(['/', '?'])
        .unwrap_or(authority_and_rest.len());
    let (authority, rest) = authority_and_rest.split_at(end);
    let rest = if rest.is_empty() { "/" } else { rest };
    Some((Some(host::host_of(authority)), rest))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// A relative path merged with the base path's directory (RFC 3986 §5.2.3).
fn merged(base: &str, relative: &str) -> String {
    let directory = base.rfind('/').map_or("/", |slash| &base[..=slash]);
    format!("{directory}{relative}")
}

/// `path` with its `.` and `..` segments applied (RFC 3986 §5.2.4).
fn without_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." if last => kept.push(""),
            "." => {}
            ".." => {
                kept.pop();
                if last {
                    kept.push("");
                }
            }
            segment => kept.push(segment),
        }
    }
    format!("/{}", kept.join("/"))
}

/// Removes the stored `GET` and `HEAD` responses to `uri` (its path and query), with every
/// variant, and revokes the handler runs in flight for them. Every removal is sent even when
/// one fails (each one Redis does not take is kept and replayed); the first failure is the
/// answer. Returns whether anything was removed.
pub(crate) async fn remove_resource(cache: &Cache, uri: &Uri) -> Result<bool, Error> {
    remove(cache, [Method::GET, Method::HEAD], uri).await
}

/// [`remove_resource`] for the responses to `methods`, sent together.
pub(crate) async fn remove<const N: usize>(
    cache: &Cache,
    methods: [Method; N],
    uri: &Uri,
) -> Result<bool, Error> {
    let each = methods.map(|method| async move {
        let base = key::base(&method, uri);
        let (entry_key, variants_prefix) = (Key::raw(base.clone()), key::variants_of(&base));
        let (entry, variants) = tokio::join!(
            cache.invalidate(&entry_key),
            cache.invalidate_prefix(&variants_prefix),
        );
        Ok::<_, Error>(entry? || variants? > 0)
    });
    let mut removed = Ok(false);
    for outcome in futures_util::future::join_all(each).await {
        removed = match (removed, outcome) {
            (Ok(any), Ok(this)) => Ok(any || this),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
    }
    removed
}

/// Removes what a write invalidates, in a task of its own that [`Cache::settle`] counts, so a
/// client that goes away does not stop it, and waits for it at most the cache's `op_timeout`:
/// Redis trouble delays the write's answer by no more, and a removal Redis did not take is
/// logged, kept and replayed.
pub(crate) async fn remove_targets(cache: &Cache, targets: Vec<Uri>) {
    let bound = cache.inner.guard.op_timeout();
    let (done, removed) = tokio::sync::oneshot::channel::<()>();
    let owned = cache.clone();
    let removals = async move {
        let each = targets.iter().map(|target| remove_resource(&owned, target));
        let outcomes = futures_util::future::join_all(each).await;
        for (target, outcome) in targets.iter().zip(outcomes) {
            if let Err(error) = outcome {
                tracing::warn!(uri = %target, %error, "stored responses a write changed could not be removed; the removal is kept and replayed");
            }
        }
        let _ = done.send(());
    };
    cache.inner.write_backs.spawn_refresh(removals);
    let _ = tokio::time::timeout(bound, removed).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::header::HOST;

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
        assert_eq!(same, ["/a", "/c"]);
        assert_eq!(targets(StatusCode::OK, "https://other.example/d"), ["/a"]);
        assert_eq!(targets(StatusCode::OK, "relative"), ["/a", "/relative"]);
        assert_eq!(targets(StatusCode::OK, "//shop.example/e"), ["/a", "/e"]);
        assert_eq!(targets(StatusCode::OK, "/x/../y/./z"), ["/a", "/y/z"]);
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
