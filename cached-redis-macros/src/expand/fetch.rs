//! The cached function: the key rendered, the cache bound, the policy's static, and the
//! `fetch` call that reads the entry or runs the body under the lease.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens as _, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{Ident, ItemFn};

use super::policy::{policy, policy_setup};
use super::probes;
use super::render::render_key;
use super::shared::{cache_binding, local};
use super::trait_impl;
use crate::model::Model;
use crate::tokens::{may_borrow, mentions, names_a_type_parameter, names_generics};

/// The cached function itself: its key, its cache and its policy, then `fetch`, which runs the
/// body on a miss.
pub(super) fn cached_fn(model: &Model, block: &TokenStream) -> TokenStream {
    let ItemFn {
        attrs, vis, sig, ..
    } = &model.item;
    let Fetch {
        key,
        render,
        cache_binding,
        checks,
        policy_static,
        call,
        ..
    } = Fetch::new(model, block, None);
    let in_trait_impl = trait_impl::helpers_generated_check(model);
    quote! {
        #(#attrs)*
        #vis #sig {
            use ::cached_redis::__private::PlainReturn as _;
            #checks
            #in_trait_impl
            let #key = #render;
            #cache_binding
            #policy_static
            #call
        }
    }
}

/// What the cached function and its `refresh_<fn>` twin are both made of.
pub(super) struct Fetch {
    /// The key's local name, and the chain that renders it.
    pub(super) key: Ident,
    pub(super) render: TokenStream,
    /// The cache's binding, and the `Option<&Cache>` it gives.
    pub(super) cache_binding: TokenStream,
    pub(super) cache: TokenStream,
    /// The compiler's checks of the attribute (see [`type_checks`]).
    pub(super) checks: TokenStream,
    /// The policy's static (with `ttl = EXPR`, also the loader and the policy it checked).
    pub(super) policy_static: TokenStream,
    /// The `fetch` call, awaited.
    pub(super) call: TokenStream,
}

impl Fetch {
    /// `refresh`: the twin the key is rendered in, when it is not the cached function.
    pub(super) fn new(model: &Model, block: &TokenStream, refresh: Option<&Ident>) -> Self {
        let policy = policy(model);
        let key = local("__cached_redis_key");
        let render = render_key(model, refresh, false);
        let (cache_binding, cache) = cache_binding(model, model.clone_cache);
        let checks = type_checks(model);
        let (policy_static, loader, policy_ref) = policy_setup(model, &policy, block);
        let detach = refresh.is_none()
            && (model.stale.is_some() || model.early.is_some())
            && model.background.unwrap_or_else(|| detachable(model, block));
        let call = fetch_call(model, quote!(#cache, #key, #policy_ref, #loader), detach);
        Fetch {
            key,
            render,
            cache_binding,
            cache,
            checks,
            policy_static,
            call,
        }
    }
}

/// `fetch(mode, near, failures, <args>)` (`fetch_if` with `cache_if`, without `failures`),
/// spanned at the return type, whose bounds it checks; `near` says whether values are kept in
/// memory too ([`probes::near`]).
fn fetch_call(model: &Model, args: TokenStream, detach: bool) -> TokenStream {
    let ret = &model.ret;
    let ret_span = ret.span();
    let mode = quote_spanned!(ret_span=>
        ::cached_redis::__private::Returns::<#ret>::PROBE.mode());
    let near = probes::near(model);
    let failures = probes::failures(model);
    let mode = quote!(#mode, #near);
    let fetch = if detach {
        quote_spanned!(ret_span=> ::cached_redis::__private::fetch_detached)
    } else {
        quote_spanned!(ret_span=> ::cached_redis::__private::fetch)
    };
    match &model.cache_if {
        None => quote_spanned! {ret_span=>
            #fetch(#mode, #failures, #args).await
        },
        // The predicate is spanned where it is written: a wrong argument type is reported there.
        Some(predicate) => {
            let fetch_if = quote_spanned!(predicate.span()=> ::cached_redis::__private::fetch_if);
            quote_spanned! {ret_span=>
                #fetch_if(#mode, #args, #predicate).await
            }
        }
    }
}

/// Whether a refresh of the function runs in the background (`fetch_detached`) when the
/// attribute does not say: no `cache_if`, no generics and no `self`, and each argument whose
/// type may borrow or be generic is not named in the body (as an identifier, or in a format
/// string), so the body's future owns what it reads. Otherwise the refresh runs in its caller.
fn detachable(model: &Model, block: &TokenStream) -> bool {
    let sig = &model.item.sig;
    if model.cache_if.is_some() || !sig.generics.params.is_empty() {
        return false;
    }
    sig.inputs.iter().all(|input| match input {
        syn::FnArg::Receiver(_) => false,
        syn::FnArg::Typed(arg) => {
            let owned = !may_borrow(&arg.ty)
                && !names_generics(&sig.generics, &arg.ty)
                && !names_a_type_parameter(&arg.ty);
            match &*arg.pat {
                syn::Pat::Ident(name) => owned || !named_in(block, &name.ident),
                _ => owned,
            }
        }
    })
}

/// Whether `block` names `ident`: as an identifier, or inside a literal (an inline format
/// argument, `"{ident}"`).
fn named_in(block: &TokenStream, ident: &Ident) -> bool {
    let name = crate::tokens::unraw(ident);
    mentions(block, ident)
        || block.clone().into_iter().any(|t| match t {
            TokenTree::Literal(lit) => lit.to_string().contains(&name),
            TokenTree::Group(g) => named_in(&g.stream(), ident),
            _ => false,
        })
}

/// Checks the compiler makes for the attribute, each spanned at the argument it is about:
/// `none_ttl` on a return type that holds a `None`, `fail_safe` on a `Result`,
/// `compress_above` in a build that compresses.
fn type_checks(model: &Model) -> TokenStream {
    let none_ttl_applies = model.none_ttl_span.map(|span| {
        // The return type, shown at the literal: the error is about `none_ttl`.
        let ret = located_at(model.ret.to_token_stream(), span);
        quote_spanned!(span=> ::cached_redis::__private::none_ttl_applies::<#ret>();)
    });
    let fail_safe_applies = model.fail_safe.map(|(_, span)| {
        let ret = located_at(model.ret.to_token_stream(), span);
        quote_spanned!(span=> ::cached_redis::__private::fail_safe_applies::<#ret>();)
    });
    let zstd_enabled = match model.compress_above {
        Some((Some(_), span)) => {
            Some(quote_spanned!(span=> ::cached_redis::__private::zstd_enabled!();))
        }
        _ => None,
    };
    quote!(#none_ttl_applies #fail_safe_applies #zstd_enabled)
}

/// `tokens`, reported at `span` but resolved where they were written (hygiene kept).
fn located_at(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tree| {
            if let TokenTree::Group(group) = &tree {
                let mut moved = Group::new(group.delimiter(), located_at(group.stream(), span));
                moved.set_span(group.span().located_at(span));
                return TokenTree::Group(moved);
            }
            tree.set_span(tree.span().located_at(span));
            tree
        })
        .collect()
}
