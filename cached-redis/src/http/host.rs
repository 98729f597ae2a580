//! Everything an application may read as where a request was sent, for the key: the URI's
//! scheme and authority, `Host`, what a reverse proxy forwards (`X-Forwarded-Host`, `-Proto`,
//! `-Port`, `-Prefix`, and `Forwarded` less the client's and the proxy's addresses), and the
//! path and query a router changed (axum's `OriginalUri`: a `Router::nest`'s prefix). Frameworks take the forwarded host first
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
    if let Some(scheme) = parts.uri.scheme() {
        base = key::with_part(base, "scheme", scheme.as_str().as_bytes());
    }
    if let Some(original) = original_uri(parts) {
        base = key::with_part(base, "original", original.as_bytes());
    }
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

/// The path and query the request had before a router changed them (an axum `Router::nest`
/// strips its prefix, `/t/acme/products` to `/products`; a rewrite may move a tenant from the
/// query into the path), from axum's `OriginalUri`, when they differ from what the layer sees.
pub(crate) fn original_uri(parts: &Parts) -> Option<&str> {
    let original = parts.extensions.get::<axum::extract::OriginalUri>()?;
    let original = original.path_and_query().map_or("", |p| p.as_str());
    let seen = parts.uri.path_and_query().map_or("", |p| p.as_str());
    (original != seen).then_some(original)
}

/// Every host the request names, lowercased, without a port: its URI's, `Host`'s,
/// `X-Forwarded-Host`'s (each of a list) and each `host` pair of `Forwarded`.
pub(crate) fn names(parts: &Parts) -> Vec<String> {
    let headers = &parts.headers;
    let mut names: Vec<String> = parts.uri.host().map(str::to_owned).into_iter().collect();
    let text = |name| {
        headers
            .get_all(name)
            .into_iter()
            .filter_map(|v| v.to_str().ok())
    };
    for value in text(HOST) {
        names.push(host_of(value.trim()).to_owned());
    }
    for value in text(::http::HeaderName::from_static("x-forwarded-host")) {
        names.extend(value.split(',').map(|host| host_of(host.trim()).to_owned()));
    }
    for value in text(FORWARDED) {
        let pairs = value
            .split([',', ';'])
            .filter_map(|pair| pair.split_once('='));
        let hosts = pairs.filter(|(name, _)| name.trim().eq_ignore_ascii_case("host"));
        names.extend(hosts.map(|(_, host)| host_of(host.trim().trim_matches('"')).to_owned()));
    }
    names
        .iter_mut()
        .for_each(|name| name.make_ascii_lowercase());
    names
}

/// The host of an authority (`shop.example:8080`, `[::1]:80`): without its port, an IPv6
/// literal with its brackets.
pub(crate) fn host_of(authority: &str) -> &str {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// A `Forwarded` line less its `for` and `by` pairs (the client's address and the proxy's),
/// so clients share entries; every other pair is kept as written, in its element (`,`) and
/// place (`;`), so two lines a parser could read a host or a scheme differently from stay
/// apart (`host =a`, with a space, is kept: parsers trim it). Quotes are not interpreted: a
/// split inside one only keeps more apart.
fn host_and_proto(line: &[u8]) -> Vec<u8> {
    let mut kept = Vec::new();
    for (i, element) in line.split(|&b| b == b',').enumerate() {
        if i > 0 {
            kept.push(b',');
        }
        let mut first = true;
        for pair in element.split(|&b| b == b';') {
            let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
            let name = name.trim_ascii();
            if name.eq_ignore_ascii_case(b"for") || name.eq_ignore_ascii_case(b"by") {
                continue;
            }
            if !first {
                kept.push(b';');
            }
            kept.extend_from_slice(pair);
            first = false;
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
        assert_ne!(
            at(b"host =evil, for=1"),
            at(b"for=2, for=1"),
            "a name with a space"
        );
        assert_ne!(at(b"hOsT=a;x-custom=1"), at(b"hOsT=a"));
    }

    #[test]
    fn the_scheme_and_a_stripped_nest_prefix_are_in_the_key() {
        let at = |uri: &str| {
            let parts = ::http::Request::get(uri).body(()).unwrap().into_parts().0;
            with_hosts(String::new(), &parts)
        };
        assert_ne!(at("http://a.example/p"), at("https://a.example/p"));
        let nested = |original: &str| {
            let mut request = ::http::Request::get("/products").body(()).unwrap();
            let original = axum::extract::OriginalUri(original.parse().unwrap());
            request.extensions_mut().insert(original);
            with_hosts(String::new(), &request.into_parts().0)
        };
        assert_eq!(nested("/t/acme/products"), "|original=/t/acme/products");
        assert_ne!(nested("/t/acme/products"), nested("/t/globex/products"));
        assert_ne!(nested("/products?tenant=a"), nested("/products?tenant=b"));
        assert_eq!(nested("/products"), "", "not nested");
    }
}
