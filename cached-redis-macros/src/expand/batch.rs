//! A `batch` function: its ids read through `__private::fetch_batch`, one key rendered per id,
//! and the body run with the ids that were not found; and its `invalidate_<fn>(ids)`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{FnArg, Ident, ItemFn, Pat};

use super::policy::{policy, policy_setup};
use super::probes;
use super::render::render_key;
use super::shared::{cache_binding, local};
use crate::model::{Batch, Kind, Model};

/// The cached function: its ids, a key for each, and the body as the loader of the missing
/// ones. The body may run more than once (an id whose load falls to this call later is loaded
/// alone), so each call clones the other arguments (references are copied).
pub(super) fn batch_fn(model: &Model, batch: &Batch, block: &TokenStream) -> TokenStream {
    let ItemFn { attrs, vis, .. } = &model.item;
    let sig = outer_signature(&model.item.sig);
    let (cache_binding, cache) = cache_binding(model, model.clone_cache);
    let (policy_static, _, policy_ref) = policy_setup(model, &policy(model), block);
    let ids = ids_iter(batch);
    let key_of = key_of(model, batch, None);
    let missing = local("__cached_redis_ids");
    let rebind = rebind(batch, &missing);
    let clones = other_args(model, batch).map(|(ident, mutable)| {
        let mutable = mutable.then(|| quote!(mut));
        quote!(#[allow(unused_variables, unused_mut)] let #mutable #ident = ::core::clone::Clone::clone(&#ident);)
    });
    let near = probes::near(model);
    let ret = &model.ret;
    // Spanned at the return type: one that is not a map is reported there.
    let call = quote_spanned! {ret.span()=>
        ::cached_redis::__private::fetch_batch::<#ret, _, _, _, _, _>(#cache, #policy_ref, #near, #ids, #key_of, |#missing| {
            #(#clones)*
            async move {
                #rebind
                #block
            }
        })
        .await
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #cache_binding
            #policy_static
            #call
        }
    }
}

/// The signature without `mut` on its arguments: each run of the body changes a clone of its
/// own (see [`rebind`] and [`batch_fn`]), never the argument itself.
fn outer_signature(sig: &syn::Signature) -> syn::Signature {
    let mut sig = sig.clone();
    for input in &mut sig.inputs {
        if let FnArg::Typed(typed) = input
            && let Pat::Ident(pat) = &mut *typed.pat
        {
            pat.mutability = None;
        }
    }
    sig
}

/// `invalidate_<fn>(ids, ..)`'s body: every id's entry removed.
pub(super) fn invalidate_body(model: &Model, batch: &Batch, helper: &Ident) -> TokenStream {
    let (cache_binding, cache) = cache_binding(model, false);
    let ids = ids_iter(batch);
    let key_of = key_of(model, batch, Some(helper));
    quote! {
        #cache_binding
        ::cached_redis::__private::invalidate_batch(#cache, #ids, #key_of).await
    }
}

/// The ids as an iterator of owned ids.
fn ids_iter(batch: &Batch) -> TokenStream {
    let ids = &batch.ids.ident;
    match batch.kind {
        Kind::Slice | Kind::Borrowed { .. } => {
            quote!(::core::iter::Iterator::cloned(::core::iter::IntoIterator::into_iter(#ids)))
        }
        Kind::Owned | Kind::Collected => quote!(#ids),
    }
}

/// `|id: &K| <the key for id>`, rendered in `helper` (or the cached function).
fn key_of(model: &Model, batch: &Batch, helper: Option<&Ident>) -> TokenStream {
    let (id, ty) = (&batch.id.ident, &batch.id.ty);
    let render = render_key(model, helper, false);
    quote!(|#id: &#ty| #render)
}

/// The body's view of the missing ids (`missing`, a `Vec` of them), as the argument is declared.
fn rebind(batch: &Batch, missing: &Ident) -> TokenStream {
    let (ids, declared, id) = (&batch.ids.ident, &batch.ids.ty, &batch.id.ty);
    match &batch.kind {
        Kind::Slice => quote!(let #ids: &[#id] = &#missing;),
        Kind::Borrowed { owned } => {
            let held = local("__cached_redis_held");
            quote! {
                let #held: #owned = ::core::iter::FromIterator::from_iter(#missing);
                let #ids = &#held;
            }
        }
        Kind::Owned => quote!(#[allow(unused_mut)] let mut #ids = #missing;),
        Kind::Collected => quote! {
            #[allow(unused_mut)]
            let mut #ids: #declared = ::core::iter::FromIterator::from_iter(#missing);
        },
    }
}

/// The function's arguments other than the ids, with whether each is declared `mut`.
fn other_args<'a>(model: &'a Model, batch: &'a Batch) -> impl Iterator<Item = (&'a Ident, bool)> {
    model.item.sig.inputs.iter().filter_map(move |input| {
        let FnArg::Typed(typed) = input else {
            return None;
        };
        match &*typed.pat {
            Pat::Ident(pat) if pat.ident != batch.ids.ident => {
                Some((&pat.ident, pat.mutability.is_some()))
            }
            _ => None,
        }
    })
}
