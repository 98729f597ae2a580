//! The keys of stored responses: `http:<METHOD>:<path>?<query in canonical order>`, then
//! `|host=<host>` and the forwarded host (`|xfh=`, `|xfp=`, `|fwd=`) when the request carries
//! them, `|user=<user>` for a request keyed by user, then `|vary:<name>=<value>;...` for a
//! response that varies on request headers. Every part is its raw bytes with `%`, `|`, `{`,
//! `}`, `\`, `;`, `=`, whitespace and anything not printable ASCII percent-encoded, so two
//! different byte strings never share a key, and a `|` only ever starts a suffix: a URL's
//! variants share the prefix `<base>|`, which no other URL's key starts with.

use ::http::{HeaderMap, HeaderName, Method, Uri};

use crate::Error;

/// The key of `method` and `uri`, before any host, user or `Vary` suffix.
pub(crate) fn base(method: &Method, uri: &Uri) -> String {
    let mut key = format!("http:{method}:");
    encode_into(&mut key, uri.path().as_bytes(), URL_RESERVED);
    if let Some(query) = uri.query().filter(|q| !q.is_empty()) {
        key.push('?');
        encode_into(&mut key, canonical_query(query).as_bytes(), URL_RESERVED);
    }
    key
}

/// A method and a path with its query, as invalidation gets them, checked.
pub(crate) fn parse_request_line(
    method: &str,
    path_and_query: &str,
) -> Result<(Method, Uri), Error> {
    let invalid = |what: &str| Error::InvalidConfig(format!("`{path_and_query}` is not {what}"));
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| invalid("a method's path"))?;
    let uri: Uri = path_and_query
        .parse()
        .map_err(|_| invalid("a path and query"))?;
    Ok((method, uri))
}

/// The prefix every variant of `base` (hosts, users, `Vary`) starts with.
pub(crate) fn variants_of(base: &str) -> String {
    format!("{base}|")
}

/// The keys of `method` requests whose path starts with `prefix`.
pub(crate) fn path_prefix(method: &str, prefix: &str) -> String {
    let mut key = format!("http:{method}:");
    encode_into(&mut key, prefix.as_bytes(), URL_RESERVED);
    key
}

/// `key` with the part `|<label>=<value>`, the value's bytes as they are.
pub(crate) fn with_part(mut key: String, label: &str, value: &[u8]) -> String {
    key.push('|');
    key.push_str(label);
    key.push('=');
    encode_into(&mut key, value, VALUE_RESERVED);
    key
}

/// `base` for the values `headers` holds of the header names a response's `Vary` lists.
pub(crate) fn varied(base: &str, names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut key = format!("{base}|vary:");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            key.push(';');
        }
        key.push_str(name.as_str());
        for value in headers.get_all(name) {
            key.push('=');
            encode_into(&mut key, value.as_bytes(), VALUE_RESERVED);
        }
    }
    key
}

/// The query's parameters sorted by their names as a query parser reads them (percent-decoded,
/// `+` as a space), parameters of one name kept in their order (a list is ordered). Each
/// parameter stays as it was written: only the order changes, so two queries share a key only
/// if they hold the same parameters, and a parser reads each name's values alike from both.
fn canonical_query(query: &str) -> String {
    let mut params: Vec<(String, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| (decoded_name(p), p))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let params: Vec<&str> = params.into_iter().map(|(_, p)| p).collect();
    params.join("&")
}

/// A parameter's name as `application/x-www-form-urlencoded` parsers (serde_urlencoded,
/// axum's `Query`) read it.
fn decoded_name(param: &str) -> String {
    let name = param.split('=').next().unwrap_or(param);
    form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(name, _)| name.into_owned())
        .unwrap_or_default()
}

/// What a URL's path and query keep encoded: `%` (so an encoded and a raw character stay
/// apart) and the key's own separators.
const URL_RESERVED: &[u8] = b"%|{}\\";

/// A value's: also `;` and `=`, which separate values in a key.
const VALUE_RESERVED: &[u8] = b"%|{}\\;=";

/// Appends `bytes`, percent-encoding the `reserved` ones, whitespace and anything that is not
/// printable ASCII: an injective, readable rendering of any bytes.
fn encode_into(key: &mut String, bytes: &[u8], reserved: &[u8]) {
    for &b in bytes {
        if b.is_ascii_graphic() && !reserved.contains(&b) {
            key.push(char::from(b));
        } else {
            key.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str) -> String {
        base(&Method::GET, &uri.parse().unwrap())
    }

    #[test]
    fn the_query_is_in_canonical_order_and_lists_keep_theirs() {
        assert_eq!(get("/products?page=2"), "http:GET:/products?page=2");
        assert_eq!(get("/p?b=1&a=2"), get("/p?a=2&b=1"));
        assert_eq!(get("/p?b=1&a=2"), "http:GET:/p?a=2&b=1");
        assert_ne!(get("/p?a=1&a=2"), get("/p?a=2&a=1"));
        assert_eq!(get("/p?"), get("/p"));
        assert_ne!(get("/p?a=1"), get("/p?a=1&b"));
    }

    #[test]
    fn variants_never_collide_with_other_urls() {
        let base = get("/p%7Cq");
        assert!(!base.contains('|'), "{base}");
        let user = with_part(get("/p"), "user", b"x|vary:accept=1");
        assert_eq!(user, "http:GET:/p|user=x%7Cvary:accept%3D1");
        assert_ne!(get("/a%7Cb"), get("/a%257Cb"));
        assert!(user.starts_with(&variants_of(&get("/p"))));
        assert!(!get("/p2").starts_with(&variants_of(&get("/p"))));
    }

    #[test]
    fn distinct_bytes_never_share_a_key() {
        let part = |value: &[u8]| with_part(String::new(), "x", value);
        assert_eq!(part(b"caf\xe9"), "|x=caf%E9");
        assert_ne!(part(b"caf\xe9"), part(b"caf\xe8"));
        assert_ne!(part(b"a b"), part(b"a%20b"));
        assert_eq!(part("é".as_bytes()), "|x=%C3%A9");
        let mut headers = HeaderMap::new();
        let names = [HeaderName::from_static("x-tenant")];
        headers.insert(
            "x-tenant",
            ::http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        let e9 = varied("b", &names, &headers);
        headers.insert(
            "x-tenant",
            ::http::HeaderValue::from_bytes(b"caf\xe8").unwrap(),
        );
        assert_ne!(e9, varied("b", &names, &headers));
    }

    /// Two queries share a key only if a form parser reads each name's values alike.
    #[test]
    fn a_reordered_query_reads_alike() {
        assert_ne!(
            get("/p?%72ole=admin&role=user"),
            get("/p?role=user&%72ole=admin")
        );
        assert_eq!(get("/p?%72ole=admin&b=1"), get("/p?b=1&%72ole=admin"));
        assert_eq!(get("/p?b+c=1&a=2"), "http:GET:/p?a=2&b+c=1");
    }

    fn by_name(query: &str) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut names = std::collections::BTreeMap::<String, Vec<String>>::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            names
                .entry(name.into_owned())
                .or_default()
                .push(value.into_owned());
        }
        names
    }

    proptest::proptest! {
        #[test]
        fn queries_share_a_key_only_if_they_read_alike(
            a in proptest::collection::vec(("(%72|r|%6F|o|a|\\+| |%2B|%20){1,3}", "[ab=%+]{0,2}"), 0..5),
            b in proptest::collection::vec(("(%72|r|%6F|o|a|\\+| |%2B|%20){1,3}", "[ab=%+]{0,2}"), 0..5),
        ) {
            let query = |params: &[(String, String)]| {
                params.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("&")
            };
            let (qa, qb) = (query(&a), query(&b));
            let (Ok(ua), Ok(ub)) = (format!("/p?{qa}").parse::<Uri>(), format!("/p?{qb}").parse::<Uri>()) else {
                return Ok(());
            };
            if base(&Method::GET, &ua) == base(&Method::GET, &ub) {
                proptest::prop_assert_eq!(by_name(&qa), by_name(&qb), "{} ~ {}", qa, qb);
                let pairs = |q: &str| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap();
                let sorted = |mut p: Vec<(String, String)>| { p.sort_by(|x, y| x.0.cmp(&y.0)); p };
                proptest::prop_assert_eq!(sorted(pairs(&qa)), sorted(pairs(&qb)));
            }
        }
    }

    #[test]
    fn a_vary_key_names_the_headers_and_their_values() {
        let mut headers = HeaderMap::new();
        headers.insert("accept-language", "en;q=0.9".parse().unwrap());
        let names = [
            HeaderName::from_static("accept-language"),
            HeaderName::from_static("accept"),
        ];
        assert_eq!(
            varied("http:GET:/p", &names, &headers),
            "http:GET:/p|vary:accept-language=en%3Bq%3D0.9;accept"
        );
    }

    #[test]
    fn invalidation_takes_the_same_keys() {
        let (method, uri) = parse_request_line("GET", "/p?b=1&a=2").unwrap();
        assert_eq!(base(&method, &uri), get("/p?a=2&b=1"));
        assert!(parse_request_line("GET", "not a path").is_err());
        assert_eq!(path_prefix("GET", "/products"), "http:GET:/products");
    }
}
