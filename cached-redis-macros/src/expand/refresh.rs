//! `refresh_<fn>`: the cached function's twin, which removes the entry first and so always
//! loads. A second copy of the body: the twin cannot call the function by name without
//! knowing whether it is an associated function.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use super::fetch::Fetch;
use super::shared::{Bodies, stub};
use crate::model::Model;
use crate::tokens::unraw;

/// `refresh_<fn>`, running the function's body, or with a stub body beside an attribute with
/// an error.
pub(super) fn refresh_fn(model: &Model, bodies: &Bodies<'_>) -> TokenStream {
    let helper = format_ident!("refresh_{}", unraw(&model.item.sig.ident));
    match bodies {
        Bodies::Real { body } => with_body(model, body, &helper),
        Bodies::Stub => {
            let sig = refresh_sig(model, &helper);
            let vis = &model.item.vis;
            let body = stub();
            quote!(#[allow(dead_code)] #vis #sig { #body })
        }
    }
}

/// The twin: the entry removed (revoking a load in flight), then the fetch the cached
/// function makes, which now always loads.
fn with_body(model: &Model, block: &TokenStream, helper: &Ident) -> TokenStream {
    let vis = &model.item.vis;
    let Fetch {
        key,
        render,
        cache_binding,
        cache,
        checks,
        policy_static,
        call,
    } = Fetch::new(model, block, Some(helper));
    let attrs = refresh_attrs(model);
    let sig = refresh_sig(model, helper);
    // The load in a block of its own: a `ttl = EXPR` that fails returns the loader's value
    // from it, which the helper then wraps in `Ok`.
    quote! {
        #attrs
        #vis #sig {
            use ::cached_redis::__private::PlainReturn as _;
            #checks
            let #key = #render;
            #cache_binding
            ::cached_redis::__private::revoke(#cache, &#key).await?;
            ::core::result::Result::Ok(async {
                #policy_static
                #call
            }.await)
        }
    }
}

/// `refresh_<fn>`'s attributes: the function's `cfg`s and a doc of its own.
fn refresh_attrs(model: &Model) -> TokenStream {
    let cfgs = model.item.attrs.iter().filter(|a| a.path().is_ident("cfg"));
    let name = &model.item.sig.ident;
    let doc = format!(
        " Runs `{name}` now and stores its result: removes the entry cached for these \
         arguments (revoking a load in flight), then loads it as a miss does, under the \
         lease. For prewarming, and after a write whose new value should be cached \
         before the next read. `Err` only with `invalidate_replicas`, when the replicas did \
         not confirm the removal (`Error::NotReplicated`): nothing was loaded, and a \
         replica may still hold the old value; retry."
    );
    quote!(#(#cfgs)* #[doc = #doc] #[allow(dead_code)])
}

/// `refresh_<fn>`'s signature: the function's, renamed, returning
/// `Result<<its return type>, cached_redis::Error>`.
fn refresh_sig(model: &Model, helper: &Ident) -> syn::Signature {
    let mut sig = model.item.sig.clone();
    sig.ident = helper.clone();
    // The checked return type: `()` where the written one was the error (`impl Trait`).
    let ret = &model.ret;
    sig.output = syn::parse_quote!(-> ::core::result::Result<#ret, ::cached_redis::Error>);
    sig
}
