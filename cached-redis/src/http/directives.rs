//! `Cache-Control` read as a shared cache must: every line or none. A line that is not text
//! (one non-ASCII byte in a directive's value) makes the whole header unreadable, and what
//! cannot be read is never taken to allow storing.

use ::http::HeaderMap;
use ::http::header::CACHE_CONTROL;

/// The directives of a `Cache-Control` header, names lower-cased, values as written.
#[derive(Debug)]
pub(crate) struct Directives {
    directives: Vec<(String, Option<String>)>,
    /// No directive has white space around its `=` (`max-age =100`): a structured field
    /// (`CDN-Cache-Control`, RFC 9213) with one is invalid, and its lifetime not to be used.
    exact: bool,
}

impl Directives {
    /// The directives of every `Cache-Control` line in `headers`; `None` if one is not text.
    pub(crate) fn of(headers: &HeaderMap) -> Option<Directives> {
        Directives::of_field(headers, CACHE_CONTROL.as_str())
    }

    /// The directives of `CDN-Cache-Control` (RFC 9213), which speaks to shared caches such as
    /// this layer; `None` if a line is not text.
    pub(crate) fn of_cdn(headers: &HeaderMap) -> Option<Directives> {
        Directives::of_field(headers, "cdn-cache-control")
    }

    /// The directives of `Surrogate-Control` (Akamai's and Fastly's, the W3C Edge
    /// Architecture note): read for what it forbids; `None` if a line is not text.
    pub(crate) fn of_surrogate(headers: &HeaderMap) -> Option<Directives> {
        Directives::of_field(headers, "surrogate-control")
    }

    /// The directives of every `field` line in `headers`; `None` if one is not text or a
    /// directive's name is not a token (`private; max-age=0`, `"private"`): what cannot be
    /// read exactly is not read at all.
    ///
    /// Lines are split at every comma, inside quotes too: a quoted value can then only add
    /// directives that are not there, which errs towards not storing (a `private` inside a
    /// quoted string counts), and never hide one that is.
    fn of_field(headers: &HeaderMap, field: &str) -> Option<Directives> {
        let mut read = Directives {
            directives: Vec::new(),
            exact: true,
        };
        for line in headers.get_all(field) {
            for directive in line.to_str().ok()?.split(',') {
                let mut parts = directive.splitn(2, '=');
                let raw_name = parts.next().unwrap_or_default();
                let raw_value = parts.next();
                let name = raw_name.trim().to_ascii_lowercase();
                if name.is_empty() && raw_value.is_none() {
                    continue;
                }
                let value_read = raw_value.map(str::trim);
                if !is_token(&name) || value_read.is_some_and(|v| !is_value(v)) {
                    return None;
                }
                let spaced = |t: &str| t.starts_with([' ', '\t']);
                read.exact &=
                    raw_value.is_none_or(|v| !spaced(v) && !raw_name.ends_with([' ', '\t']));
                read.directives.push((name, value_read.map(str::to_owned)));
            }
        }
        Some(read)
    }

    /// Whether no directive has white space around its `=`.
    pub(crate) fn exact(&self) -> bool {
        self.exact
    }

    /// Whether `name` is among them, with a value or without.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.directives.iter().any(|(d, _)| d == name)
    }

    /// The most restrictive of `name`'s delta-seconds values (RFC 9111 §1.2.2): `None` when
    /// absent, `Some(None)` when one is not a plain number (`-1`, `"60"`, `1.5`, none at all).
    pub(crate) fn seconds(&self, name: &str) -> Option<Option<u64>> {
        let mut values = self.directives.iter().filter(|(d, _)| d == name).peekable();
        values.peek()?;
        let mut least: Option<u64> = None;
        for (_, value) in values {
            let Some(secs) = value.as_deref().and_then(delta_seconds) else {
                return Some(None);
            };
            least = Some(least.map_or(secs, |l| l.min(secs)));
        }
        Some(least)
    }
}

/// Whether `text` is an HTTP token (RFC 9110 §5.6.2), as a directive's name must be.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `text` is a directive's value as RFC 9111 §5.2 writes one: a token, or a quoted
/// string (without escapes: one with a backslash is taken as unreadable). `max-age=60; private`
/// and `max-age=60 private` are not, and hide nothing.
fn is_value(text: &str) -> bool {
    let quoted = text.len() >= 2 && text.starts_with('"') && text.ends_with('"');
    is_token(text) || quoted && !text[1..text.len() - 1].contains(['"', '\\'])
}

/// A delta-seconds value: ASCII digits only; one too large for 31 bits is 2^31 (RFC 9111
/// §1.2.2).
pub(crate) fn delta_seconds(text: &str) -> Option<u64> {
    const MOST: u64 = 1 << 31;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<u64>().map_or(MOST, |secs| secs.min(MOST)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(lines: &[&[u8]]) -> Option<Directives> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(
                CACHE_CONTROL,
                ::http::HeaderValue::from_bytes(line).unwrap(),
            );
        }
        Directives::of(&headers)
    }

    #[test]
    fn a_line_that_is_not_text_makes_the_header_unreadable() {
        assert!(of(&[b"private, max-age=60, x-owner=\"Jos\xe9\""]).is_none());
        assert!(of(&[b"public", b"x=\xff"]).is_none());
        let read = of(&[b"Public, MAX-AGE=60", b"private=\"set-cookie\", ,"]).unwrap();
        assert!(read.has("public") && read.has("private") && read.has("max-age"));
        for sloppy in [
            &b"private; max-age=0"[..],
            b"private max-age=600",
            b"\"private\"",
            b"max-age=60, stale-while-revalidate=30; private",
            b"stale-if-error=600 private",
            b"x=\"a\\\"b\"",
        ] {
            assert!(
                of(&[sloppy]).is_none(),
                "{}",
                String::from_utf8_lossy(sloppy)
            );
        }
    }

    #[test]
    fn delta_seconds_are_plain_numbers_and_the_least_wins() {
        let secs = |line: &[u8]| of(&[line]).unwrap().seconds("max-age");
        assert!(
            of(&[b"max-age="]).is_none(),
            "no value after `=`: unreadable"
        );
        assert_eq!(secs(b"public"), None);
        assert_eq!(secs(b"max-age=60"), Some(Some(60)));
        assert_eq!(secs(b"max-age=60, max-age=5"), Some(Some(5)));
        for invalid in [
            &b"max-age=-1"[..],
            b"max-age=\"60\"",
            b"max-age=1.5",
            b"max-age",
        ] {
            assert_eq!(
                secs(invalid),
                Some(None),
                "{}",
                String::from_utf8_lossy(invalid)
            );
        }
        assert_eq!(
            secs(b"max-age=99999999999999999999999"),
            Some(Some(1 << 31))
        );
    }
}
