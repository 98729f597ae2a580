//! Request headers that say who is asking: a request that carries one is personal, and is
//! cached only when `key_by_user` names the user. Besides `Authorization` and `Cookie`, the
//! identity headers that authenticating proxies and gateways set in place of them (after
//! checking a token, often stripping it), so that a handler reading `X-Forwarded-Email` behind
//! oauth2-proxy never has its answer shared. `CacheLayer::credential_headers` adds more.

use ::http::{HeaderMap, HeaderName};

/// Headers every layer treats as credentials.
pub(crate) const BUILT_IN: [&str; 38] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    // oauth2-proxy, and nginx `auth_request` setups
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-preferred-username",
    "x-auth-request-groups",
    "x-auth-request-access-token",
    // Apache, Traefik forward-auth and hand-rolled gateways
    "remote-user",
    "x-remote-user",
    "x-webauth-user",
    "x-user",
    "x-user-id",
    "x-user-email",
    "x-userinfo",
    // Kong
    "x-consumer-id",
    "x-consumer-username",
    "x-authenticated-userid",
    "x-jwt-assertion",
    // AWS ALB, Google IAP, Azure App Service, Cloudflare Access
    "x-amzn-oidc-identity",
    "x-amzn-oidc-data",
    "x-amzn-oidc-accesstoken",
    "x-goog-authenticated-user-email",
    "x-goog-authenticated-user-id",
    "x-goog-iap-jwt-assertion",
    "x-ms-client-principal",
    "x-ms-client-principal-id",
    "x-ms-client-principal-name",
    "cf-access-jwt-assertion",
    "cf-access-authenticated-user-email",
    // Client certificates forwarded by Envoy, nginx and HAProxy
    "x-forwarded-client-cert",
    "x-ssl-client-cert",
    "x-client-cert",
];

/// Whether `headers` carry a credential: a built-in one or one of `more`.
pub(crate) fn carried(headers: &HeaderMap, more: &[HeaderName]) -> bool {
    BUILT_IN.iter().any(|name| headers.contains_key(*name))
        || more.iter().any(|name| headers.contains_key(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_count_as_credentials() {
        let with = |name: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(HeaderName::from_static(name), "x".parse().unwrap());
            headers
        };
        assert!(carried(&with("x-forwarded-email"), &[]));
        assert!(carried(&with("cookie"), &[]));
        assert!(!carried(&with("x-tenant"), &[]));
        assert!(carried(
            &with("x-tenant"),
            &[HeaderName::from_static("x-tenant")]
        ));
        for name in BUILT_IN {
            assert_eq!(
                name,
                name.to_ascii_lowercase(),
                "header names are lower-case"
            );
        }
    }
}
