//! The keys of stored responses: `http:<METHOD>:<path>?<query in canonical order>`, then
//! `|host=<host>` when the request names one, `|user=<user>` for a request keyed by user, then `|vary:<name>=<value>;...` for a response
//! that varies on request headers. `%`, `|`, `{`, `}`, `\` and anything unprintable in the URL
//! are percent-encoded (and `;`, `=` in values), so a `|` only ever starts a suffix: a URL's
//! variants share the prefix `<base>|`, which no other URL's key starts with.

use ::http::{HeaderMap, HeaderName, Method, Uri};

use crate::Error;

/// The key of `method` and `uri`, before any user or `Vary` suffix.
pub(crate) fn base(method: &Method, uri: &Uri) -> String {
    let mut key = format!("http:{method}:");
    encode_into(&mut key, uri.path());
    if let Some(query) = uri.query().filter(|q| !q.is_empty()) {
        key.push('?');
        encode_into(&mut key, &canonical_query(query));
    }
    key
}

/// [`base`] from a method and a path with its query, as invalidation gets them.
pub(crate) fn base_of(method: &str, path_and_query: &str) -> Result<String, Error> {
    let invalid = |what: &str| Error::InvalidConfig(format!("`{path_and_query}` is not {what}"));
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| invalid("a method's path"))?;
    let uri: Uri = path_and_query
        .parse()
        .map_err(|_| invalid("a path and query"))?;
    Ok(base(&method, &uri))
}

/// The prefix every variant of `base` (users, `Vary`) starts with.
pub(crate) fn variants_of(base: &str) -> String {
    format!("{base}|")
}

/// The keys of `method` requests whose path starts with `prefix`.
pub(crate) fn path_prefix(method: &str, prefix: &str) -> String {
    let mut key = format!("http:{method}:");
    encode_into(&mut key, prefix);
    key
}

/// A `GET`'s entries go with its `HEAD`'s: the same resource.
pub(crate) fn methods_invalidated_by(method: &str) -> Vec<&str> {
    if method.eq_ignore_ascii_case("GET") {
        vec!["GET", "HEAD"]
    } else {
        vec![method]
    }
}

/// `base` for requests to `host` (case-insensitive, as hosts are).
pub(crate) fn for_host(mut base: String, host: &str) -> String {
    base.push_str("|host=");
    encode_value_into(&mut base, &host.to_ascii_lowercase());
    base
}

/// `base` for the user `user`.
pub(crate) fn for_user(mut base: String, user: &str) -> String {
    base.push_str("|user=");
    encode_value_into(&mut base, user);
    base
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
            encode_value_into(&mut key, &String::from_utf8_lossy(value.as_bytes()));
        }
    }
    key
}

/// The query's parameters sorted by name, parameters of one name kept in their order (a list
/// is ordered).
fn canonical_query(query: &str) -> String {
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    params.sort_by_key(|p| p.split('=').next().unwrap_or(p));
    params.join("&")
}

/// Appends a URL's path or query, percent-encoding `%` (so an encoded and a raw character stay
/// apart), the key's own separators and what is unprintable.
fn encode_into(key: &mut String, text: &str) {
    encode(key, text, &['%', '|', '{', '}', '\\']);
}

/// Appends a user's or a header's value: also `;` and `=`, which separate values in a key.
fn encode_value_into(key: &mut String, text: &str) {
    encode(key, text, &['%', '|', '{', '}', '\\', ';', '=']);
}

fn encode(key: &mut String, text: &str, reserved: &[char]) {
    for c in text.chars() {
        if reserved.contains(&c) || c.is_control() || c.is_whitespace() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                key.push_str(&format!("%{b:02X}"));
            }
        } else {
            key.push(c);
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
        let user = for_user(get("/p"), "x|vary:accept=1");
        assert_eq!(user, "http:GET:/p|user=x%7Cvary:accept%3D1");
        assert_ne!(get("/a%7Cb"), get("/a%257Cb"));
        assert!(user.starts_with(&variants_of(&get("/p"))));
        assert!(!get("/p2").starts_with(&variants_of(&get("/p"))));
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
        assert_eq!(base_of("GET", "/p?b=1&a=2").unwrap(), get("/p?a=2&b=1"));
        assert!(base_of("GET", "not a path").is_err());
        assert_eq!(methods_invalidated_by("get"), ["GET", "HEAD"]);
        assert_eq!(path_prefix("GET", "/products"), "http:GET:/products");
    }
}
