//! `<fn>_key`: the key the function caches under for its arguments.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::render::render_key;
use super::shared::{Bodies, Shape, helper_fn, stub};
use crate::model::Model;
use crate::tokens::unraw;

/// `<fn>_key(<the key's arguments>)`: the key the function caches under for them, so code
/// that needs it (a `ttl` check, a page listing entries) never spells the template again.
pub(super) fn key_fn(model: &Model, bodies: &Bodies<'_>) -> TokenStream {
    let name = &model.item.sig.ident;
    let helper = format_ident!("{}_key", unraw(name));
    let doc = format!(
        " The key `{name}` caches its result under for these arguments (to pass to \
         `Cache::ttl` or `Cache::redis_key`, say)."
    );
    let body = match bodies {
        Bodies::Stub => stub(),
        Bodies::Real { .. } => render_key(model, Some(&helper), false),
    };
    helper_fn(
        model,
        &helper,
        &doc,
        Shape::Plain,
        quote!(::cached_redis::Key),
        body,
    )
}
