//! `invalidate_all_<fn>`: removes every entry of the function's template, whatever the
//! arguments, and no other template's.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use super::render::helper_path;
use super::shared::{Bodies, Shape, cache_binding, helper_fn, local, stub};
use crate::model::{Model, Part};
use crate::tokens::unraw;

/// `invalidate_all_<fn>(<the cache expression's arguments>)`: removes every entry the
/// function's template renders, whatever the arguments.
pub(super) fn invalidate_all_fn(model: &Model, bodies: &Bodies<'_>) -> TokenStream {
    // A cache chosen by the key (`cache = &shards[id % 4]`) holds only part of the family:
    // there is no one cache to clear.
    if model.cache_chosen_by_key {
        return TokenStream::new();
    }
    let name = &model.item.sig.ident;
    let helper = format_ident!("invalidate_all_{}", unraw(name));
    let doc = format!(
        " Removes every entry `{name}` cached, for any arguments, and revokes the loads of them \
         in flight: the keys its template renders, not other templates' that share its start \
         (`Cache::invalidate_family`). Returns how many Redis keys (entries and leases) were \
         removed; an `Err` means Redis could not be reached or, on a cluster, a slot moved \
         during the scan, and entries may live until their TTL."
    );
    let body = match bodies {
        Bodies::Stub => stub(),
        Bodies::Real { .. } => {
            let family = local("__cached_redis_family");
            let render = render_family(model, &helper);
            let (cache_binding, cache) = cache_binding(model, false);
            quote! {
                let #family = #render;
                #cache_binding
                ::cached_redis::__private::invalidate_family(#cache, #family).await
            }
        }
    };
    let ret = quote!(::core::result::Result<u64, ::cached_redis::Error>);
    helper_fn(model, &helper, &doc, Shape::Family, ret, body)
}

/// The key family chain: the template's text, and `.part()` for each placeholder.
fn render_family(model: &Model, helper: &Ident) -> TokenStream {
    let path = model.derived.then(|| helper_path(model, helper));
    let parts = model.key.iter().map(|part| match part {
        Part::Text(text) => quote!(.text(#text)),
        Part::Value {
            root: Some(root),
            fields,
            display: false,
        } if fields.is_empty() => match nameable_type_of(model, root) {
            Some(ty) => quote!(.push_part({
                use ::cached_redis::__private::{ProbeKeyPart as _, ProbeOther as _};
                (&&::cached_redis::__private::Probe::<#ty>::new()).integer()
            })),
            None => quote!(.part()),
        },
        Part::Value { .. } => quote!(.part()),
        // The type argument is named at the call (`invalidate_all_f::<u32>()`).
        Part::TypeName(ty) => quote!(.fixed(::core::any::type_name::<#ty>())),
    });
    quote!(::cached_redis::__private::family() #path #(#parts)* .build())
}

/// The type of the argument `name`, references removed, if `invalidate_all_<fn>` can name it
/// in its body: no `impl Trait`, lifetime, `Self` or generic parameter of the function in it.
/// The family then matches only what that type writes (an integer's digits).
fn nameable_type_of(model: &Model, name: &Ident) -> Option<syn::Type> {
    let mut ty = model.item.sig.inputs.iter().find_map(|input| match input {
        syn::FnArg::Typed(typed) => match &*typed.pat {
            syn::Pat::Ident(pat) if pat.ident == *name => Some((*typed.ty).clone()),
            _ => None,
        },
        syn::FnArg::Receiver(_) => None,
    })?;
    while let syn::Type::Reference(reference) = ty {
        ty = *reference.elem;
    }
    let generics: Vec<String> = model
        .item
        .sig
        .generics
        .params
        .iter()
        .filter_map(|p| match p {
            syn::GenericParam::Type(t) => Some(t.ident.to_string()),
            syn::GenericParam::Const(c) => Some(c.ident.to_string()),
            syn::GenericParam::Lifetime(_) => None,
        })
        .collect();
    nameable(quote!(#ty), &generics).then_some(ty)
}

/// Whether `tokens`, groups included, name no `impl`, `Self`, lifetime or one of `generics`.
fn nameable(tokens: TokenStream, generics: &[String]) -> bool {
    tokens.into_iter().all(|token| match token {
        proc_macro2::TokenTree::Ident(ident) => {
            ident != "impl" && ident != "Self" && !generics.contains(&ident.to_string())
        }
        proc_macro2::TokenTree::Punct(punct) => punct.as_char() != '\'',
        proc_macro2::TokenTree::Group(group) => nameable(group.stream(), generics),
        proc_macro2::TokenTree::Literal(_) => true,
    })
}
