//! The function's policy (TTL, jitter, lease, codec, compression) as `__private::policy(...)`,
//! and its static: built at compile time, or at the first call with `ttl = EXPR`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;

use super::shared::local;
use crate::duration::JitterSpec;
use crate::format::CodecSpec;
use crate::model::{Model, Near};

/// The policy's static, the loader and the policy to pass. With `ttl = EXPR` the policy is
/// built at the first call (the expression evaluated once, checked at run time); if it is
/// invalid, the error is logged and the loader answers, uncached.
pub(super) fn policy_setup(
    model: &Model,
    policy: &TokenStream,
    block: &TokenStream,
) -> (TokenStream, TokenStream, TokenStream) {
    let Some(expr) = &model.ttl_expr else {
        let setup =
            quote!(static __CACHED_REDIS_POLICY: ::cached_redis::__private::Policy = #policy;);
        return (
            setup,
            // A block around the async block: an inner attribute of the body
            // (`#![allow(..)]`) is refused on a closure's bare body expression.
            quote!(move || { async move #block }),
            quote!(&__CACHED_REDIS_POLICY),
        );
    };
    let (loader, checked) = (
        local("__cached_redis_loader"),
        local("__cached_redis_policy"),
    );
    let ttl = quote_spanned!(expr.span()=> {
        let ttl: ::core::time::Duration = #expr;
        ttl
    });
    let setup = quote! {
        static __CACHED_REDIS_POLICY: ::std::sync::LazyLock<
            ::core::result::Result<::cached_redis::__private::Policy, ::cached_redis::Error>,
        > = ::std::sync::LazyLock::new(|| ::cached_redis::__private::policy_at_run_time(#policy, #ttl));
        let #loader = move || { async move #block };
        let #checked = match ::cached_redis::__private::checked_policy(&__CACHED_REDIS_POLICY) {
            ::core::option::Option::Some(policy) => policy,
            ::core::option::Option::None => return #loader().await,
        };
    };
    (setup, quote!(#loader), quote!(#checked))
}

/// `__private::policy(...)`, from values checked at compile time.
pub(super) fn policy(model: &Model) -> TokenStream {
    let name = model.item.sig.ident.to_string();
    let millis = |d: std::time::Duration| {
        let ms = d.as_millis() as u64;
        quote!(::cached_redis::__private::Duration::from_millis(#ms))
    };
    let optional = |d: Option<std::time::Duration>| match d {
        Some(d) => {
            let d = millis(d);
            quote!(::core::option::Option::Some(#d))
        }
        None => quote!(::core::option::Option::None),
    };
    let ttl = millis(model.ttl);
    let jitter = match model.jitter {
        None => quote!(::cached_redis::__private::Jitter::None),
        Some(JitterSpec::Ratio(ppm)) => quote!(::cached_redis::__private::Jitter::Ratio(#ppm)),
        Some(JitterSpec::Fixed(d)) => {
            let d = millis(d);
            quote!(::cached_redis::__private::Jitter::Fixed(#d))
        }
    };
    let lock_ttl = optional(model.lock_ttl);
    let none_ttl = optional(model.none_ttl);
    let max_load = optional(model.max_load);
    let near = optional(match model.near {
        Near::For(keep, _) => Some(keep),
        Near::Unsaid | Near::Off => None,
    });
    let format = format(model);
    let stale = optional(model.stale);
    let fail_safe = optional(model.fail_safe.map(|(d, _)| d));
    let back_off = optional(model.back_off);
    let early = match model.early {
        Some(ppm) => quote!(::core::option::Option::Some(#ppm)),
        None => quote!(::core::option::Option::None),
    };
    quote!(::cached_redis::__private::policy(
        #name, #ttl, #jitter, (#lock_ttl, #max_load), #none_ttl, (#near, #stale, #early, (#fail_safe, #back_off)), #format
    ))
}

/// The policy's codec and compression overrides.
fn format(model: &Model) -> TokenStream {
    let private = quote!(::cached_redis::__private);
    let codec = match model.codec {
        None => quote!(::core::option::Option::None),
        Some(CodecSpec::Json) => quote!(::core::option::Option::Some(#private::Codec::Json)),
        Some(CodecSpec::MessagePack) => {
            quote!(::core::option::Option::Some(#private::Codec::MessagePack))
        }
    };
    let compression = match model.compress_above {
        None => quote!(::core::option::Option::None),
        Some((None, _)) => quote!(::core::option::Option::Some(#private::Compression::None)),
        Some((Some(above), _)) => quote!(::core::option::Option::Some(
            #private::Compression::Zstd { above: #above }
        )),
    };
    quote!((#codec, #compression))
}
