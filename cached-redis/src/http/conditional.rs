//! Conditional requests answered by the layer (RFC 9110 §13): a `GET` or `HEAD` with
//! `If-None-Match` or `If-Modified-Since` is looked up as the same request without them; the
//! `200` it gets (stored, or loaded by a handler that never saw the conditions) becomes a
//! `304 Not Modified` when its validators match, carrying the headers §15.4.5 asks for.

use ::http::header::{ETAG, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use ::http::{HeaderMap, HeaderName, Response, StatusCode};

use super::freshness::http_date;

/// The validators a request sent, taken off it so the handler answers in full.
#[derive(Debug, Default)]
pub(crate) struct Conditions {
    none_match: Option<HeaderValue>,
    modified_since: Option<HeaderValue>,
}

/// What a `304` does not carry of the `200` it stands for: the representation's own metadata
/// and framing (RFC 9110 §15.4.5). Everything else stays, every line of it: the headers
/// §15.4.5 asks for, `X-Cache` and `Age`, and what is not about the body (a `Set-Cookie` on a
/// response the layer does not store, which is this caller's alone).
const DROPPED: [&str; 9] = [
    "content-type",
    "content-length",
    "content-encoding",
    "content-language",
    "content-range",
    "content-disposition",
    "content-digest",
    "repr-digest",
    "transfer-encoding",
];

impl Conditions {
    /// The request's `If-None-Match` and `If-Modified-Since`, removed from `headers` (a
    /// header given twice is one condition each: a list).
    pub(crate) fn take(headers: &mut HeaderMap) -> Conditions {
        Conditions {
            none_match: joined(headers, IF_NONE_MATCH),
            modified_since: joined(headers, IF_MODIFIED_SINCE),
        }
    }

    /// Puts them back on a request the handler answers itself.
    pub(crate) fn restore(self, headers: &mut HeaderMap) {
        if let Some(value) = self.none_match {
            headers.insert(IF_NONE_MATCH, value);
        }
        if let Some(value) = self.modified_since {
            headers.insert(IF_MODIFIED_SINCE, value);
        }
    }

    /// `response` as this request's answer: a `304` with no body and no representation
    /// metadata if it is a `200` whose validators these conditions match, else as it is.
    pub(crate) fn answer<B>(
        &self,
        response: Response<B>,
        empty: impl FnOnce() -> B,
    ) -> Response<B> {
        if response.status() != StatusCode::OK || !self.match_unmodified(response.headers()) {
            return response;
        }
        let (mut parts, _) = response.into_parts();
        parts.status = StatusCode::NOT_MODIFIED;
        // Every line of each kept header: a cache in front replaces its stored lines with
        // these (RFC 9111 §4.3.4).
        let mut kept = HeaderMap::new();
        for (name, value) in &parts.headers {
            if !DROPPED.contains(&name.as_str()) {
                kept.append(name.clone(), value.clone());
            }
        }
        parts.headers = kept;
        Response::from_parts(parts, empty())
    }

    /// Whether a response with these headers is "not modified" for the request: its `ETag`
    /// matches `If-None-Match` (weak comparison; `*` matches any), or, without
    /// `If-None-Match`, its `Last-Modified` is no later than `If-Modified-Since`. A validator
    /// that cannot be read matches nothing: the full response goes.
    fn match_unmodified(&self, headers: &HeaderMap) -> bool {
        if let Some(none_match) = &self.none_match {
            let Some(etag) = headers.get(ETAG).and_then(|e| opaque_tag(e.as_bytes())) else {
                return false;
            };
            let none_match = none_match.as_bytes().trim_ascii();
            if none_match == b"*" {
                return true;
            }
            return entity_tags(none_match).is_some_and(|tags| tags.contains(&etag));
        }
        let Some(since) = self
            .modified_since
            .as_ref()
            .and_then(|v| http_date(v.as_bytes()))
        else {
            return false;
        };
        let modified = headers
            .get(LAST_MODIFIED)
            .and_then(|v| http_date(v.as_bytes()));
        modified.is_some_and(|modified| modified <= since)
    }
}

/// A header's values as one comma-separated list, removed from `headers`.
fn joined(headers: &mut HeaderMap, name: HeaderName) -> Option<HeaderValue> {
    let values: Vec<&[u8]> = headers
        .get_all(&name)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if values.is_empty() {
        return None;
    }
    let bytes = values.join(&b", "[..]);
    headers.remove(&name);
    // Not a header value once joined (it was one before): no condition, the full answer.
    HeaderValue::from_bytes(&bytes).ok()
}

/// The entity tags of an `If-None-Match` list, each as [`opaque_tag`] gives it, reading
/// quotes as quotes (a comma or `*` inside a tag is part of it); `None` if it is not such a
/// list, which then matches nothing.
fn entity_tags(list: &[u8]) -> Option<Vec<&[u8]>> {
    let mut tags = Vec::new();
    let mut rest = list;
    loop {
        rest = rest.trim_ascii_start();
        while let Some(after) = rest.strip_prefix(b",") {
            rest = after.trim_ascii_start();
        }
        if rest.is_empty() {
            return Some(tags);
        }
        let weak = rest.starts_with(b"W/");
        let quoted = if weak { &rest[2..] } else { rest };
        let close = quoted.get(1..)?.iter().position(|&b| b == b'"')? + 2;
        let end = close + if weak { 2 } else { 0 };
        tags.push(opaque_tag(&rest[..end])?);
        rest = &rest[end..];
        if !(rest.is_empty() || rest.trim_ascii_start().starts_with(b",")) {
            return None;
        }
    }
}

/// An entity tag's opaque part, `W/` dropped (weak comparison, RFC 9110 §8.8.3.2): `"v1"` of
/// `W/"v1"`. `None` for what is not an entity tag.
fn opaque_tag(tag: &[u8]) -> Option<&[u8]> {
    let tag = tag.trim_ascii();
    let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
    let inner = tag.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    // etagc: %x21 / %x23-7E / obs-text, no quote inside.
    let valid = inner
        .iter()
        .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80);
    valid.then_some(tag)
}

/// A strong entity tag for a body: the first 16 bytes of its SHA-256, in hex.
pub(crate) fn etag_of(body: &[u8]) -> HeaderValue {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_tags_compare_weakly_and_refuse_what_is_not_one() {
        assert_eq!(opaque_tag(b" W/\"a\" "), Some(&b"\"a\""[..]));
        assert_eq!(opaque_tag(b"\"a\""), opaque_tag(b"W/\"a\""));
        for not_a_tag in [&b"a"[..], b"\"a", b"\"a\"b\"", b"W/a", b""] {
            assert_eq!(opaque_tag(not_a_tag), None, "{not_a_tag:?}");
        }
    }

    #[test]
    fn conditions_given_twice_are_one_list_and_leave_the_request() {
        let mut headers = HeaderMap::new();
        headers.append(IF_NONE_MATCH, HeaderValue::from_static("\"a\""));
        headers.append(IF_NONE_MATCH, HeaderValue::from_static("\"b\""));
        let conditions = Conditions::take(&mut headers);
        assert!(headers.is_empty());
        let mut tagged = HeaderMap::new();
        tagged.insert(ETAG, HeaderValue::from_static("\"b\""));
        assert!(conditions.match_unmodified(&tagged));
        conditions.restore(&mut headers);
        assert_eq!(headers[IF_NONE_MATCH], "\"a\", \"b\"");
    }

    #[test]
    fn a_304_drops_the_representation_metadata() {
        let conditions = Conditions {
            none_match: Some(HeaderValue::from_static("*")),
            modified_since: None,
        };
        let response = Response::builder()
            .header(ETAG, "\"x\"")
            .header("cache-control", "max-age=5")
            .header("content-type", "text/plain")
            .header("content-length", "4")
            .header("x-cache", "HIT")
            .body("body")
            .unwrap();
        let answer = conditions.answer(response, || "");
        assert_eq!(answer.status(), StatusCode::NOT_MODIFIED);
        let names: Vec<&str> = answer.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            ["etag", "cache-control", "x-cache"],
            "no representation metadata"
        );
        assert_eq!(*answer.body(), "");
    }
}
