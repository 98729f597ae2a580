//! Request headers that say who is asking, or for which tenant. A request carrying a credential
//! is personal, and is cached only when `key_by_user` names the user: `Authorization`,
//! `Cookie`, and the identity headers that authenticating proxies and gateways set in place of
//! them (often after stripping the token), found by name (`X-Forwarded-Email`, `X-Api-Key`,
//! `X-Amzn-Mtls-Clientcert`, ...) since no list of products is ever complete;
//! `CacheLayer::credential_headers` adds more. A tenant header (`X-Tenant-Id`,
//! `X-Scope-OrgID`) instead joins the key: tenants share nothing, and each is cached.

use ::http::{HeaderMap, HeaderName};

use super::key;

/// Credentials whose names carry none of the [`FRAGMENTS`].
const NAMED: [&str; 3] = ["cookie", "x-consumer-id", "x-forwarded-groups"];

/// Parts of a header name that mark it as a credential: `authorization`, `x-auth-token`,
/// `x-api-key`, `x-goog-iap-jwt-assertion`, `x-session-id`, `x-ms-client-principal`,
/// `x-amzn-oidc-data`, `x-forwarded-client-cert`, `x-amzn-mtls-clientcert`, `remote-user`,
/// `tailscale-user-login`, `x-pomerium-claim-email`, ...
const FRAGMENTS: [&str; 27] = [
    "auth",
    "token",
    "apikey",
    "api-key",
    "jwt",
    "session",
    "principal",
    "identity",
    "oidc",
    "saml",
    "credential",
    "cert",
    "mtls",
    "user",
    "login",
    "claim",
    "email",
    "secret",
    "password",
    "key",
    "subject",
    "ssl-client",
    "uid",
    "account",
    "customer",
    "member",
    "-dn",
];

/// Names with a fragment that say nothing of who asks.
const NOT_CREDENTIALS: [&str; 3] = ["user-agent", "sec-fetch-user", "sec-websocket-key"];

/// Parts of a header name that mark it as naming a tenant.
const TENANT_FRAGMENTS: [&str; 8] = [
    "tenant",
    "org",
    "organisation",
    "organization",
    "workspace",
    "team",
    "project",
    "realm",
];

/// Whether `name` is a credential: named, found by a fragment, or among `more`.
pub(crate) fn is_credential(name: &HeaderName, more: &[HeaderName]) -> bool {
    if more.contains(name) {
        return true;
    }
    // `_` read as `-`: `x-api_key` is `x-api-key`, to a reader and to some proxies.
    let text = name.as_str().replace('_', "-");
    if NOT_CREDENTIALS.contains(&text.as_str()) {
        return false;
    }
    NAMED.contains(&text.as_str()) || FRAGMENTS.iter().any(|f| text.contains(f))
}

/// Whether `name` names a tenant (`X-Tenant-Id`, `X-Scope-OrgID`, `X-Org`, `X-Team-Id`).
fn is_tenant(name: &HeaderName) -> bool {
    let text = name.as_str().replace('_', "-");
    TENANT_FRAGMENTS.iter().any(|f| text.contains(f))
}

/// Whether `headers` carry a credential.
pub(crate) fn carried(headers: &HeaderMap, more: &[HeaderName]) -> bool {
    headers.keys().any(|name| is_credential(name, more))
}

/// Whether a credential other than `Cookie` (which HTTP/2 splits into several lines) comes
/// twice: a client's own `X-User-Id` before the one a gateway appended, which a handler and a
/// `key_by_user` closure could read differently.
pub(crate) fn doubled(headers: &HeaderMap, more: &[HeaderName]) -> bool {
    headers.keys().any(|name| {
        name != ::http::header::COOKIE
            && is_credential(name, more)
            && headers.get_all(name).iter().nth(1).is_some()
    })
}

/// `base` with every tenant header's values, each as its raw bytes.
pub(crate) fn with_tenants(mut base: String, headers: &HeaderMap) -> String {
    let mut names: Vec<&HeaderName> = headers.keys().filter(|n| is_tenant(n)).collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    for name in names {
        for value in headers.get_all(name) {
            base = key::with_part(base, name.as_str(), value.as_bytes());
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(names: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for name in names {
            headers.append(HeaderName::from_static(name), "x".parse().unwrap());
        }
        headers
    }

    #[test]
    fn identity_headers_count_as_credentials() {
        for name in [
            "authorization",
            "cookie",
            "x-forwarded-email",
            "x-api-key",
            "x-auth-token",
            "x-amzn-mtls-clientcert",
            "x-arr-clientcert",
            "tailscale-user-login",
            "x-pomerium-claim-email",
            "x-consumer-id",
            "oidc_claim_email",
            "api_key",
            "ocp-apim-subscription-key",
            "x-ssl-client-s-dn",
            "x-client-dn",
            "x-uid",
            "x-account-id",
            "x-customer-id",
            "x-member-id",
        ] {
            assert!(carried(&with(&[name]), &[]), "{name}");
        }
        for name in [
            "user-agent",
            "sec-fetch-user",
            "sec-websocket-key",
            "accept-language",
            "x-tenant-id",
        ] {
            assert!(!carried(&with(&[name]), &[]), "{name}");
        }
        let mine = [HeaderName::from_static("x-acme")];
        assert!(carried(&with(&["x-acme"]), &mine));
    }

    #[test]
    fn a_credential_twice_is_doubled_and_cookies_may_be_split() {
        assert!(doubled(&with(&["x-user-id", "x-user-id"]), &[]));
        assert!(!doubled(&with(&["cookie", "cookie"]), &[]));
        assert!(!doubled(&with(&["x-user-id"]), &[]));
    }

    #[test]
    fn tenant_headers_join_the_key() {
        let mut headers = with(&["x-tenant-id", "x-scope-orgid"]);
        headers.insert("x-tenant-id", "acme".parse().unwrap());
        assert_eq!(
            with_tenants(String::new(), &headers),
            "|x-scope-orgid=x|x-tenant-id=acme"
        );
    }
}
