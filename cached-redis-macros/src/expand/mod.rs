//! Code generation. The expansion decides nothing at run time: it renders the key, names the
//! cache and hands the body to `::cached_redis::__private`. Each generated function has a
//! file of its own; this one lists them.

mod batch;
mod family;
mod fetch;
mod invalidate;
mod key_fn;
mod lazy_fn;
mod policy;
mod probes;
mod refresh;
mod render;
mod shared;
mod trait_impl;
mod update;

use proc_macro2::TokenStream;
use quote::quote;

use crate::args;
use crate::errors::Errors;
use crate::model::{self, Model};
use lazy_fn::LazyFn;
use shared::Bodies;

/// The attribute's entry. On an error in the attribute, the original item, every error, and
/// the generated helpers with stub bodies, so that their callers add no errors of their own.
pub(crate) fn redis_cached(args: TokenStream, item: TokenStream) -> TokenStream {
    let LazyFn {
        item: item_fn,
        body,
    } = match syn::parse2(item.clone()) {
        Ok(lazy) => lazy,
        Err(not_a_fn) => {
            let error = syn::Error::new(
                not_a_fn.span(),
                "#[redis_cached] goes on an `async fn` (a free function or a method)",
            );
            return with_error(item, error);
        }
    };
    let mut errors = Errors::default();
    let args = match args::parse(args, &mut errors) {
        Ok(args) => args,
        Err(error) => {
            errors.push(error);
            return with_error(item, errors.finish(()).unwrap_err());
        }
    };
    let model = model::build(item_fn, args, &mut errors);
    match errors.finish(()) {
        Ok(()) => expand(&model, &body),
        Err(error) => {
            let stubs = helpers(&model, &Bodies::Stub);
            let with_error = with_error(item, error);
            quote!(#with_error #stubs)
        }
    }
}

fn with_error(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.into_compile_error();
    quote!(#item #error)
}

/// The cached function, then its helpers.
fn expand(model: &Model, body: &TokenStream) -> TokenStream {
    let cached = match &model.batch {
        Some(batch) => batch::batch_fn(model, batch, body),
        None => fetch::cached_fn(model, body),
    };
    let helpers = helpers(model, &Bodies::Real { body });
    quote!(#cached #helpers)
}

/// A generated helper: its declaration, with the body `Bodies` asks for.
type Helper = fn(&Model, &Bodies<'_>) -> TokenStream;

/// Every helper generated beside the cached function, in the order they are written out. A
/// new helper is a file of its own and a line here.
const HELPERS: [Helper; 5] = [
    invalidate::invalidate_fn,
    update::update_fn,
    key_fn::key_fn,
    family::invalidate_all_fn,
    refresh::refresh_fn,
];

/// A `batch` function's helpers: no `update_*` or `refresh_*`, which change one entry (the
/// single-id function with the same key has them, and shares the entries).
const BATCH_HELPERS: [Helper; 3] = [
    invalidate::invalidate_fn,
    key_fn::key_fn,
    family::invalidate_all_fn,
];

/// Every helper, or none (`helpers = false`).
fn helpers(model: &Model, bodies: &Bodies<'_>) -> TokenStream {
    if !model.helpers {
        return TokenStream::new();
    }
    let helpers: &[Helper] = match model.batch {
        Some(_) => &BATCH_HELPERS,
        None => &HELPERS,
    };
    helpers.iter().map(|helper| helper(model, bodies)).collect()
}
