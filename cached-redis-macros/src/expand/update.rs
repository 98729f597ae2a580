//! `update_<fn>`: changes the cached value in place by compare-and-set, never creating an
//! entry.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::Ident;

use super::policy::policy;
use super::shared::{Bodies, Extra, Shape, helper_fn, keyed_body, local, stub};
use crate::model::Model;
use crate::tokens::unraw;

/// `update_<fn>(<arguments>, change)`: changes the cached value in place. The closure's
/// argument is a type parameter that the return type's one `UpdateTarget` impl fixes at the
/// call (the `Ok` value of a `Result`, through any alias), so a return type without one is an
/// error where `update_*` is called, not where the function is defined.
pub(super) fn update_fn(model: &Model, bodies: &Bodies<'_>) -> TokenStream {
    let name = &model.item.sig.ident;
    let helper = format_ident!("update_{}", unraw(name));
    let doc = format!(
        " Changes the value `{name}` cached for these arguments in place (its `Ok` or `Some` \
         value; for `Result<Option<T>, E>`, `|row: &mut T|` runs on a cached `Ok(Some(_))` and \
         `|cached: &mut Option<T>|` on either): `change` runs on it, again if another process's update came in between, and \
         the result is written back only if the entry still holds what was read, keeping its \
         TTL. It never creates an entry. Returns `Ok(true)` if the cached value changed; \
         `Ok(false)` if nothing was cached, a newer load replaced the entry, or the entry was \
         removed instead (it holds what this build's type cannot, such as a field a newer \
         build added; nothing that misses the change is left either way); an `Err` means Redis could not be reached, \
         and the entry may miss the change until its TTL."
    );
    let change = local("change");
    let value = Ident::new("__CachedRedisValue", Span::call_site());
    let ret = &model.ret;
    // The function's policy, for the codec and compression its values are written in.
    let policy = policy(model);
    let body = match bodies {
        Bodies::Stub => stub(),
        Bodies::Real { .. } => keyed_body(
            model,
            &helper,
            true,
            |cache, key| quote!(::cached_redis::__private::update::<#ret, #value>(#cache, #key, &#policy, #change).await),
        ),
    };
    let extra = Extra {
        param: value.clone(),
        bound: quote!(#ret: ::cached_redis::__private::UpdateTarget<#value>),
        arg: quote!(#change: impl ::core::ops::FnMut(&mut #value)),
    };
    let ret = quote!(::core::result::Result<bool, ::cached_redis::Error>);
    helper_fn(model, &helper, &doc, Shape::Async(Some(&extra)), ret, body)
}
