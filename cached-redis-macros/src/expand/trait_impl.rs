//! A cached method of a trait impl written without `helpers = false`. Its helpers are not
//! members of the trait, which the compiler reports as E0407, once per helper, at the
//! attribute; the attribute cannot see the `impl` it is in to say so itself. So the method asks
//! the compiler, in its body: `Self::<fn>_key` names the generated helper, a function, when the
//! helpers are associated functions of the type (an inherent impl), and otherwise falls back to
//! a constant of a local trait, whose type fails a check that says to write `helpers = false`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::model::Model;
use crate::tokens::{names_generics, unraw};

/// The check, spanned at the attribute, or nothing where it cannot apply: without helpers,
/// without a receiver (a free function has no `Self`), and where naming `<fn>_key` without
/// its arguments would leave a type to infer (type or const parameters, `impl Trait`).
pub(crate) fn helpers_generated_check(model: &Model) -> TokenStream {
    let sig = &model.item.sig;
    if !model.helpers || !model.has_receiver || infers_types(sig) {
        return TokenStream::new();
    }
    let helper = format_ident!("{}_key", unraw(&sig.ident));
    quote! {
        {
            #[allow(non_upper_case_globals, dead_code)]
            trait __CachedRedisHelperFallback {
                const #helper: ::cached_redis::__private::InTraitImpl =
                    ::cached_redis::__private::InTraitImpl;
            }
            impl<T: ?::core::marker::Sized> __CachedRedisHelperFallback for T {}
            ::cached_redis::__private::helpers_generated(&Self::#helper);
        }
    }
}

/// Whether naming the function's helper leaves types for the compiler to infer.
fn infers_types(sig: &syn::Signature) -> bool {
    let generic = sig
        .generics
        .params
        .iter()
        .any(|p| !matches!(p, syn::GenericParam::Lifetime(_)));
    let impl_trait = sig.inputs.iter().any(|input| match input {
        syn::FnArg::Typed(typed) => names_generics(&sig.generics, &typed.ty),
        syn::FnArg::Receiver(_) => false,
    });
    generic || impl_trait
}
