//! What is stored for a URL: a response (status, headers, body, when it was stored) or, for a
//! response that varies on request headers, the names of those headers, under which each
//! variant is then stored apart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::http::header::{HeaderName, HeaderValue};
use ::http::{Response, StatusCode, response};
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::freshness::Windows;
use crate::Policy;
use crate::stored::cacheable::{Cacheable, Split};

/// The value stored under a URL's key.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum HttpEntry {
    /// The response to replay.
    #[serde(rename = "response")]
    Response(StoredResponse),
    /// The response varies on these request headers: each variant has a key of its own.
    #[serde(rename = "vary")]
    Vary(Vec<String>),
}

fn whole_seconds(window: Option<Duration>) -> u64 {
    window.map_or(0, |w| w.as_secs())
}

/// Windows from whole seconds (`0`: none).
fn windows_of(stale_while_revalidate: u64, stale_if_error: u64) -> Windows {
    let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
    (secs(stale_while_revalidate), secs(stale_if_error))
}

/// A response as stored: readable JSON, the body as text when it is UTF-8.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredResponse {
    status: u16,
    headers: Vec<(String, Blob)>,
    body: Blob,
    /// Unix milliseconds, for `Age`.
    stored_at: u64,
    /// How old it was when stored (its own `Age`, or its `Date`'s), in seconds.
    #[serde(default)]
    age: u64,
    /// The key it was stored under: a response read under another (copied there by someone
    /// with write access to Redis) is not replayed.
    #[serde(default)]
    key: String,
    /// Unix milliseconds when it stops being fresh (`0`: stored by a build before stale
    /// responses were served, which kept none past it).
    #[serde(default)]
    fresh_until: u64,
    /// Its `stale-while-revalidate` and `stale-if-error`, in seconds (`0`: none).
    #[serde(default)]
    stale_while_revalidate: u64,
    #[serde(default)]
    stale_if_error: u64,
}

/// How long a response is stored: fresh for `ttl`, `age` old already, and what it allows
/// past that.
pub(crate) struct Lifetime {
    pub(crate) ttl: Duration,
    pub(crate) age: Duration,
    pub(crate) windows: Windows,
}

/// Bytes as JSON: text when they are UTF-8, base64 otherwise.
#[derive(Debug, Serialize, Deserialize)]
enum Blob {
    #[serde(rename = "text")]
    Text(String),
    #[serde(rename = "base64")]
    Base64(String),
}

impl Blob {
    fn of(bytes: &[u8]) -> Blob {
        match std::str::from_utf8(bytes) {
            Ok(text) => Blob::Text(text.to_owned()),
            Err(_) => Blob::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    fn bytes(self) -> Option<Bytes> {
        match self {
            Blob::Text(text) => Some(Bytes::from(text)),
            Blob::Base64(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .map(Bytes::from),
        }
    }
}

/// Headers that describe one connection, not the response (RFC 9110 §7.6.1, RFC 9111
/// §3.1), and `Age`, which a replay recomputes: never stored. Nor is any header the
/// response's `Connection` names.
const NOT_STORED: [&str; 11] = [
    "age",
    "proxy-authentication-info",
    "proxy-connection",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The header names a `Connection` header lists (lower-cased), which belong to the connection
/// the response came over.
fn connection_options(headers: &::http::HeaderMap) -> Vec<String> {
    let mut options = Vec::new();
    for line in headers.get_all(::http::header::CONNECTION) {
        let line = String::from_utf8_lossy(line.as_bytes());
        options.extend(line.split(',').map(|o| o.trim().to_ascii_lowercase()));
    }
    options
}

impl HttpEntry {
    /// What a stored response allows past its freshness (a `Vary` record: nothing; it lasts as
    /// long as its variants may answer).
    pub(crate) fn windows(&self) -> Windows {
        match self {
            HttpEntry::Response(stored) => {
                windows_of(stored.stale_while_revalidate, stored.stale_if_error)
            }
            HttpEntry::Vary(_) => (None, None),
        }
    }
}

impl StoredResponse {
    /// The response a handler produced, body read, to be stored for `lifetime`.
    pub(crate) fn capture(
        parts: &response::Parts,
        body: &Bytes,
        lifetime: Lifetime,
        key: &str,
    ) -> StoredResponse {
        let Lifetime { ttl, age, windows } = lifetime;
        let per_connection = connection_options(&parts.headers);
        let headers = parts
            .headers
            .iter()
            .filter(|(name, _)| !NOT_STORED.contains(&name.as_str()))
            .filter(|(name, _)| !per_connection.iter().any(|o| o == name.as_str()))
            .map(|(name, value)| (name.as_str().to_owned(), Blob::of(value.as_bytes())))
            .collect();
        let stored_at = unix_ms();
        StoredResponse {
            status: parts.status.as_u16(),
            headers,
            body: Blob::of(body),
            stored_at,
            age: age.as_secs(),
            key: key.to_owned(),
            fresh_until: stored_at.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(0)),
            stale_while_revalidate: whole_seconds(windows.0),
            stale_if_error: whole_seconds(windows.1),
        }
    }

    /// Whether it is past its freshness (one stored by an older build never is).
    pub(crate) fn is_stale(&self) -> bool {
        self.fresh_until != 0 && unix_ms() >= self.fresh_until
    }

    /// The stored response, with `Age` (whole seconds since it was stored, plus the age it
    /// had then); `None` if what Redis holds is not a valid response any more.
    pub(crate) fn replay(self, key: &str) -> Option<(response::Parts, Bytes)> {
        if self.key != key {
            return None;
        }
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(self.status).ok()?;
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            let value = HeaderValue::from_maybe_shared(value.bytes()?).ok()?;
            headers.append(name, value);
        }
        // What would not have been stored is not replayed either, whoever wrote the entry.
        for name in connection_options(headers)
            .iter()
            .map(String::as_str)
            .chain(NOT_STORED)
        {
            headers.remove(name);
        }
        let stored_for = Duration::from_millis(unix_ms().saturating_sub(self.stored_at));
        let age = self.age.saturating_add(stored_for.as_secs());
        headers.insert(::http::header::AGE, HeaderValue::from(age));
        let body = self.body.bytes()?;
        Some((response.into_parts().0, body))
    }
}

/// A handler run, as the engine sees it.
#[derive(Debug)]
pub(crate) enum Loaded {
    /// Store this for this long, and share it.
    Store(HttpEntry, Duration),
    /// Share it with requests that waited for the same run, without storing it.
    Share(HttpEntry),
    /// Nothing to store or share: the response is its own caller's.
    Alone,
    /// The handler failed (its service's error): its caller gets the error, unless a stored
    /// response answers in its place.
    Failed,
    /// The handler answered with a server error: its caller's, unless a stored response
    /// answers in its place.
    Errored,
    /// What Redis, or a run that this request waited for, had.
    Cached(HttpEntry),
}

impl Cacheable for Loaded {
    type Value = HttpEntry;

    fn split(self, _: &Policy) -> Split<HttpEntry, Loaded> {
        match self {
            Loaded::Store(entry, ttl) => Split::Store(entry, ttl),
            Loaded::Share(entry) | Loaded::Cached(entry) => Split::Pass(entry),
            Loaded::Alone => Split::Alone(Loaded::Alone),
            Loaded::Failed => Split::Keep(Loaded::Failed),
            Loaded::Errored => Split::Keep(Loaded::Errored),
        }
    }

    fn from_value(entry: HttpEntry) -> Loaded {
        Loaded::Cached(entry)
    }

    fn is_failure(&self) -> bool {
        matches!(self, Loaded::Failed | Loaded::Errored)
    }

    fn windows(entry: &HttpEntry) -> Option<Windows> {
        Some(entry.windows())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifetime() -> Lifetime {
        Lifetime {
            ttl: Duration::from_secs(30),
            age: Duration::ZERO,
            windows: (None, Some(Duration::from_secs(60))),
        }
    }

    #[test]
    fn a_response_round_trips_with_its_age() {
        let response = Response::builder()
            .status(201)
            .header("content-type", "application/json")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .header("transfer-encoding", "chunked")
            .header("connection", "X-Hop, close")
            .header("x-hop", "1")
            .header("proxy-connection", "keep-alive")
            .header("age", "3")
            .body(())
            .unwrap();
        let (parts, ()) = response.into_parts();
        let stored = StoredResponse::capture(&parts, &Bytes::from_static(b"[1]"), lifetime(), "k");
        let json = serde_json::to_string(&HttpEntry::Response(stored)).unwrap();
        assert!(json.contains(r#""body":{"text":"[1]"}"#), "{json}");
        let HttpEntry::Response(stored) = serde_json::from_str(&json).unwrap() else {
            panic!("{json}")
        };
        assert!(!stored.is_stale());
        let entry = HttpEntry::Response(stored);
        assert_eq!(entry.windows(), (None, Some(Duration::from_secs(60))));
        let HttpEntry::Response(stored) = entry else {
            unreachable!()
        };
        let (parts, body) = stored.replay("k").unwrap();
        assert_eq!(parts.status, 201);
        assert_eq!(parts.headers.get_all("x-multi").iter().count(), 2);
        for gone in [
            "transfer-encoding",
            "connection",
            "x-hop",
            "proxy-connection",
        ] {
            assert!(parts.headers.get(gone).is_none(), "{gone}");
        }
        assert_eq!(parts.headers["age"], "0");
        assert_eq!(body, "[1]");
    }

    #[test]
    fn binary_bodies_are_base64() {
        let (parts, ()) = Response::new(()).into_parts();
        let stored =
            StoredResponse::capture(&parts, &Bytes::from_static(&[0xff, 0, 1]), lifetime(), "k");
        let json = serde_json::to_string(&stored).unwrap();
        assert!(json.contains(r#""base64":"/wAB""#), "{json}");
        let stored: StoredResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(stored.replay("k").unwrap().1.as_ref(), [0xff, 0, 1]);
    }
}
