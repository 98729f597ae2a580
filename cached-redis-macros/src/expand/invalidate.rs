//! `invalidate_<fn>`: removes the entry cached for its arguments and revokes a load in flight.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::batch::invalidate_body;
use super::shared::{Bodies, Shape, helper_fn, keyed_body, stub};
use crate::model::{Batch, Model};
use crate::tokens::unraw;

pub(super) fn invalidate_fn(model: &Model, bodies: &Bodies<'_>) -> TokenStream {
    let name = &model.item.sig.ident;
    let helper = format_ident!("invalidate_{}", unraw(name));
    if let Some(batch) = &model.batch {
        return batch_invalidate_fn(model, batch, bodies, &helper);
    }
    let doc = format!(
        " Removes the entry `{name}` cached for these arguments and revokes any load of it in flight. \
         Call it after every write to the data behind it. Returns whether an entry was removed; \
         an `Err` means Redis could not be reached, and the entry may live until its TTL."
    );
    let body = match bodies {
        Bodies::Stub => stub(),
        Bodies::Real { .. } => keyed_body(
            model,
            &helper,
            false,
            |cache, key| quote!(::cached_redis::__private::invalidate(#cache, #key).await),
        ),
    };
    let ret = quote!(::core::result::Result<bool, ::cached_redis::Error>);
    helper_fn(model, &helper, &doc, Shape::Async(None), ret, body)
}

/// A `batch` function's `invalidate_<fn>(ids, ..)`: every id's entry removed.
fn batch_invalidate_fn(
    model: &Model,
    batch: &Batch,
    bodies: &Bodies<'_>,
    helper: &proc_macro2::Ident,
) -> TokenStream {
    let (name, ids) = (&model.item.sig.ident, &batch.ids.ident);
    let doc = format!(
        " Removes the entries `{name}` cached for each of `{ids}` (with these other arguments) and \
         revokes any load of them in flight. Call it after every write to the data behind them. \
         Returns how many entries were removed; an `Err` means Redis could not be told of some, \
         which are then kept and replayed as for `Cache::invalidate`."
    );
    let body = match bodies {
        Bodies::Stub => stub(),
        Bodies::Real { .. } => invalidate_body(model, batch, helper),
    };
    let ret = quote!(::core::result::Result<u64, ::cached_redis::Error>);
    helper_fn(model, helper, &doc, Shape::Async(None), ret, body)
}
