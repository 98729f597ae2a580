//! Everything an application may read as a request's host, for the key: `Host` (or the URI's
//! authority), and what a reverse proxy forwards (`X-Forwarded-Host`, `-Proto`, `-Port`,
//! `-Prefix`, and `Forwarded`'s `host` and `proto`). Frameworks take the forwarded host first
//! (axum-extra's `Host`: `Forwarded`, then `X-Forwarded-Host`, then `Host`), so a tenant's
//! response is keyed by whichever of them the application reads, each as its raw bytes.

use ::http::header::{FORWARDED, HOST};
use ::http::request::Parts;

use super::key;

/// Headers kept whole, with the label they have in a key.
const FORWARDED_AS_IS: [(&str, &str); 4] = [
    ("x-forwarded-host", "xfh"),
    ("x-forwarded-proto", "xfproto"),
    ("x-forwarded-port", "xfport"),
    ("x-forwarded-prefix", "xfprefix"),
];

/// `base` with every host the request names.
pub(crate) fn with_hosts(mut base: String, parts: &Parts) -> String {
    let headers = &parts.headers;
    for value in headers.get_all(HOST) {
        base = key::with_part(base, "host", value.as_bytes());
    }
    if let Some(authority) = parts.uri.authority() {
        base = key::with_part(base, "authority", authority.as_str().as_bytes());
    }
    for (name, label) in FORWARDED_AS_IS {
        for value in headers.get_all(name) {
            base = key::with_part(base, label, value.as_bytes());
        }
    }
    for value in headers.get_all(FORWARDED) {
        base = key::with_part(base, "fwd", &host_and_proto(value.as_bytes()));
    }
    base
}

/// A `Forwarded` line with only its `host` and `proto` pairs, in their elements (`,`) and
/// places (`;`): what the client's own address (`for`) and the proxy's (`by`) change is left
/// out, so clients share entries, while two lines whose hosts a parser could read differently
/// stay apart. Quotes are not interpreted: a split inside one only keeps more apart.
fn host_and_proto(line: &[u8]) -> Vec<u8> {
    let mut kept = Vec::new();
    for (i, element) in line.split(|&b| b == b',').enumerate() {
        if i > 0 {
            kept.push(b',');
        }
        let mut first = true;
        for pair in element.split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
            if name.eq_ignore_ascii_case(b"host") || name.eq_ignore_ascii_case(b"proto") {
                if !first {
                    kept.push(b';');
                }
                kept.extend_from_slice(pair);
                first = false;
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(headers: &[(&str, &[u8])]) -> String {
        let mut request = ::http::Request::get("/p");
        for (name, value) in headers {
            request = request.header(*name, ::http::HeaderValue::from_bytes(value).unwrap());
        }
        with_hosts(String::new(), &request.body(()).unwrap().into_parts().0)
    }

    #[test]
    fn every_host_the_application_may_read_is_in_the_key() {
        let proxied = key_of(&[
            ("host", b"app:8080"),
            ("x-forwarded-host", b"a.example.com"),
        ]);
        assert_eq!(proxied, "|host=app:8080|xfh=a.example.com");
        let other = key_of(&[
            ("host", b"app:8080"),
            ("x-forwarded-host", b"b.example.com"),
        ]);
        assert_ne!(proxied, other);
        assert_ne!(key_of(&[("host", b"A")]), key_of(&[("host", b"a")]));
        assert_ne!(
            key_of(&[("host", b"caf\xe9")]),
            key_of(&[("host", b"caf\xe8")])
        );
        assert_eq!(key_of(&[("x-forwarded-proto", b"http")]), "|xfproto=http");
    }

    #[test]
    fn forwarded_keeps_its_hosts_in_their_places_and_drops_client_addresses() {
        let at = |line: &[u8]| key_of(&[("forwarded", line)]);
        assert_eq!(
            at(b"for=1.2.3.4;host=a.com;proto=https"),
            "|fwd=host%3Da.com%3Bproto%3Dhttps"
        );
        assert_eq!(at(b"for=1.2.3.4;host=a.com"), at(b"for=9.9.9.9;host=a.com"));
        assert_ne!(at(b"for=x, host=b"), at(b"for=x;host=b"), "another element");
        assert_ne!(at(b"host=a, host=b"), at(b"host=b, host=a"));
    }
}
