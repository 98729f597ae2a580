//! What the expansion asks of the return type by type, where its name cannot tell
//! (autoref specialization): whether values are kept near, and whether a failed load's
//! error is shared with its joiners.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;

use crate::model::{Model, Near};
use crate::tokens::{holds_a_macro, may_borrow, names_a_type_parameter, names_generics};

/// Whether the return type can be probed. A probe's bounds hold `'static`, which method
/// lookup does not weigh: a return type that may borrow (`Self` included: it may name a
/// generic type), names the function's generic parameters, names what reads as an enclosing
/// `impl`'s (`T`), or is or holds a macro (whose expansion may name either), would fail the
/// bound rather than fall back.
fn probeable(model: &Model) -> bool {
    let ret = &model.ret;
    !may_borrow(ret)
        && !names_generics(&model.item.sig.generics, ret)
        && !names_a_type_parameter(ret)
        && !holds_a_macro(ret)
}

/// Whether the function keeps values near, as a `NearChoice`: `KeepNear` spanned at
/// `near = "..."`, where a value that cannot be copied is reported; `NotNear` with
/// `near = "off"`; where the attribute does not say, the return type's probe: values are kept
/// for the cache's `near_by_default` where they can be copied.
pub(super) fn near(model: &Model) -> TokenStream {
    match model.near {
        Near::For(_, span) => quote_spanned!(span=> ::cached_redis::__private::KeepNear),
        Near::Unsaid if probeable(model) => {
            let ret = &model.ret;
            quote_spanned! {ret.span()=> {
                #[allow(unused_imports)]
                use ::cached_redis::__private::{
                    KeepsInner as _, KeepsNothing as _, KeepsPlain as _,
                };
                (&&&::cached_redis::__private::NearProbe::<#ret>::new()).__cached_redis_near()
            }}
        }
        Near::Unsaid | Near::Off => quote!(::cached_redis::__private::NotNear),
    }
}

/// Whether joiners of a failed load take a clone of its error: by type, for a `Result` whose
/// error is `Clone`.
pub(super) fn failures(model: &Model) -> TokenStream {
    if !probeable(model) {
        return quote!(::core::option::Option::None);
    }
    let ret = &model.ret;
    quote_spanned! {ret.span()=> {
        #[allow(unused_imports)]
        use ::cached_redis::__private::{OwnFailures as _, ShareFailures as _};
        (&&::cached_redis::__private::FailureProbe::<#ret>::new()).__cached_redis_failures()
    }}
}
