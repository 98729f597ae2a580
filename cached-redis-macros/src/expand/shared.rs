//! What the generated functions share: how a helper is declared (its generics, its
//! parameters, `&self`), how its key and cache are bound, and its stub body.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens as _, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{Ident, ItemFn};

use super::render::render_key;
use crate::model::{Model, Param, Part};
use crate::tokens::mentions;

/// What the generated helpers do: their work, or nothing (after an error in the attribute).
/// `body` is the function's own, which `refresh_<fn>` runs.
pub(super) enum Bodies<'a> {
    Real { body: &'a TokenStream },
    Stub,
}

/// A name the user's body cannot see.
pub(super) fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// The body of a helper generated beside an attribute with an error: it is never run, as
/// the crate does not compile.
pub(super) fn stub() -> TokenStream {
    quote!(#![allow(unused_variables)] ::core::unimplemented!())
}

/// An async helper's body: the key rendered (inside `update_*`: `within_update`), the cache
/// bound, then `call(cache, key)`.
pub(super) fn keyed_body(
    model: &Model,
    helper: &Ident,
    within_update: bool,
    call: impl FnOnce(&TokenStream, &Ident) -> TokenStream,
) -> TokenStream {
    let key = local("__cached_redis_key");
    let render = render_key(model, Some(helper), within_update);
    let (cache_binding, cache) = cache_binding(model, false);
    let call = call(&cache, &key);
    quote! {
        let #key = #render;
        #cache_binding
        #call
    }
}

/// Binds the cache and returns the `Option<&Cache>` expression to pass on. `owned`: a clone
/// of the handle (a `&mut self` method, whose body takes `self` while the cache is in use),
/// otherwise the borrow the expression gives.
pub(super) fn cache_binding(model: &Model, owned: bool) -> (TokenStream, TokenStream) {
    match &model.cache {
        Some(expr) if owned => {
            let cache = local("__cached_redis_cache");
            let binding = quote_spanned!(expr.span()=>
                let #cache: ::cached_redis::Cache = ::core::clone::Clone::clone(#expr);
            );
            (binding, quote!(::core::option::Option::Some(&#cache)))
        }
        Some(expr) => {
            let cache = local("__cached_redis_cache");
            let binding = quote_spanned!(expr.span()=>
                let #cache: &::cached_redis::Cache = #expr;
            );
            (binding, quote!(::core::option::Option::Some(#cache)))
        }
        None => {
            let global = local("__cached_redis_global");
            (
                quote!(let #global = ::cached_redis::__private::global();),
                quote!(::core::option::Option::as_ref(&#global)),
            )
        }
    }
}

/// How a generated helper is declared.
pub(super) enum Shape<'a> {
    /// An `async fn` over the arguments the key and the cache expression use, and `Extra`'s.
    Async(Option<&'a Extra>),
    /// A plain `fn` over the key's arguments only.
    Plain,
    /// An `async fn` over the cache expression's arguments only.
    Family,
}

/// A type parameter, its bound and an argument of its own, for one helper.
pub(super) struct Extra {
    pub(super) param: Ident,
    pub(super) bound: TokenStream,
    pub(super) arg: TokenStream,
}

/// A generated helper beside the cached function: its `cfg`s, generics and visibility, `&self`
/// first for a method, then its arguments (see [`Shape`]).
pub(super) fn helper_fn(
    model: &Model,
    helper: &Ident,
    doc: &str,
    shape: Shape<'_>,
    ret: TokenStream,
    body: TokenStream,
) -> TokenStream {
    let ItemFn { attrs, vis, .. } = &model.item;
    let cfgs = attrs.iter().filter(|a| a.path().is_ident("cfg"));
    let (asyncness, params, extra) = match shape {
        Shape::Async(extra) => (Some(quote!(async)), &model.helper_params, extra),
        Shape::Plain => (None, &model.key_params, None),
        Shape::Family => (Some(quote!(async)), &model.cache_params, None),
    };
    // A batch function's async helpers take its ids where the key names one.
    let params: Vec<Param> = match (&model.batch, asyncness.is_some()) {
        (Some(batch), true) => params
            .iter()
            .map(|p| {
                if p.ident == batch.id.ident {
                    batch.ids.clone()
                } else {
                    p.clone()
                }
            })
            .collect(),
        _ => params.clone(),
    };
    let params = &params;
    let mut generics = helper_generics(model, params, extra.is_some());
    if let Some(extra) = extra {
        let param = &extra.param;
        let bound = &extra.bound;
        generics.params.push(syn::parse_quote!(#param));
        generics
            .make_where_clause()
            .predicates
            .push(syn::parse_quote!(#bound));
    }
    let where_clause = &generics.where_clause;
    let receiver = model.has_receiver.then(|| quote!(&self,));
    let params = params.iter().map(|p| {
        let (ident, ty) = (&p.ident, &p.ty);
        quote!(#ident: #ty)
    });
    let extra_arg = extra.map(|extra| &extra.arg);
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #[allow(dead_code)]
        #vis #asyncness fn #helper #generics (#receiver #(#params,)* #extra_arg) -> #ret #where_clause {
            #body
        }
    }
}

/// The cached function's generics, less the type and const parameters a helper with an
/// explicit key has no use for (a handle's `D` in `get<D: Db>(db: &D, id: u64)` with
/// `key = "user:<id>"`): left in, they could not be inferred where the helper is called. With
/// a derived key every parameter stays, since the key's path names them all.
fn helper_generics(model: &Model, params: &[Param], uses_ret: bool) -> syn::Generics {
    let mut generics = model.item.sig.generics.clone();
    if model.derived {
        return generics;
    }
    let mut used = TokenStream::new();
    for p in params {
        p.ty.to_tokens(&mut used);
    }
    if uses_ret {
        model.ret.to_tokens(&mut used);
    }
    model.cache.to_tokens(&mut used);
    for part in &model.key {
        if let Part::TypeName(t) = part {
            t.to_tokens(&mut used);
        }
    }
    let name = |p: &syn::GenericParam| match p {
        syn::GenericParam::Type(t) => Some(t.ident.clone()),
        syn::GenericParam::Const(c) => Some(c.ident.clone()),
        syn::GenericParam::Lifetime(_) => None,
    };
    let dropped: Vec<Ident> = generics
        .params
        .iter()
        .filter_map(name)
        .filter(|n| !mentions(&used, n))
        .collect();
    let mentions_dropped = |tokens: TokenStream| dropped.iter().any(|d| mentions(&tokens, d));
    generics.params = generics
        .params
        .into_iter()
        .filter(|p| name(p).is_none_or(|n| !dropped.contains(&n)))
        .map(|mut p| {
            if let syn::GenericParam::Type(t) = &mut p {
                t.bounds = std::mem::take(&mut t.bounds)
                    .into_iter()
                    .filter(|b| !mentions_dropped(b.to_token_stream()))
                    .collect();
            }
            p
        })
        .collect();
    if let Some(where_clause) = &mut generics.where_clause {
        where_clause.predicates = std::mem::take(&mut where_clause.predicates)
            .into_iter()
            .filter(|w| !mentions_dropped(w.to_token_stream()))
            .collect();
    }
    generics
}
