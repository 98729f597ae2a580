//! The key builder chain: how the cached function and every keyed helper render the key.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::Ident;

use crate::model::{Model, Part};
use crate::tokens::{names_generics, unraw};

/// The start of a derived key rendered inside the helper `helper`: the cached function's
/// path, found from the helper's own.
pub(super) fn helper_path(model: &Model, helper: &Ident) -> TokenStream {
    let here = quote!(&|| {});
    let helper = helper.to_string();
    let name = unraw(&model.item.sig.ident);
    quote!(.text(&::cached_redis::__private::helper_function_path(#here, #helper, #name)))
}

/// The key builder chain. Each value is spanned at its parameter, so a type that cannot be
/// rendered is reported there. `helper` names the generated helper the chain is rendered in,
/// when it is not the cached function itself (a derived key names the cached function);
/// `within_update`: that helper is `update_*`, with generic parameters of its own.
pub(super) fn render_key(
    model: &Model,
    helper: Option<&Ident>,
    within_update: bool,
) -> TokenStream {
    let path = model.derived.then(|| {
        let here = quote!(&|| {});
        match helper {
            None => quote!(.text(::cached_redis::__private::function_path(#here))),
            // `update_*` has two type parameters of its own (the value and the closure),
            // which its path shows after the function's own.
            Some(helper) if within_update => {
                let helper = helper.to_string();
                let name = unraw(&model.item.sig.ident);
                let own = own_generic_count(model);
                quote!(.text(&::cached_redis::__private::update_function_path(#here, #helper, #name, #own)))
            }
            Some(helper) => helper_path(model, helper),
        }
    });
    let parts = model.key.iter().map(|part| match part {
        Part::Text(text) => quote!(.text(#text)),
        Part::Value {
            root,
            fields,
            display,
        } => render_value(model, root.as_ref(), fields, *display),
        Part::TypeName(ty) => quote!(.part(::core::any::type_name::<#ty>())),
    });
    // A derived key's parts have a bound of their own, whose error says `skip` or `key`.
    let start = if model.derived {
        quote!(derived_key)
    } else {
        quote!(key)
    };
    quote!(::cached_redis::__private::#start() #path #(#parts)* .build())
}

/// `.part(&root.fields)` (`.display(..)` with `display`), spanned at the argument, so a type
/// that cannot be rendered is reported there. An argument of a derived key whose type the
/// function's generics name (`id: impl Display`, `id: K`) keeps `KeyPart`'s bound, which the
/// compiler then suggests adding to them, rather than the derived key's hidden one.
fn render_value(
    model: &Model,
    root: Option<&Ident>,
    fields: &[String],
    display: bool,
) -> TokenStream {
    let span = root.map_or(model.key_span, Ident::span);
    let generic = |ident: &Ident| {
        let param = model.key_params.iter().find(|p| p.ident == *ident);
        param.is_some_and(|p| names_generics(&model.item.sig.generics, &p.ty))
    };
    let method = match root {
        _ if display => quote_spanned!(span=> display),
        Some(ident) if model.derived && generic(ident) => quote_spanned!(span=> generic_part),
        _ => quote_spanned!(span=> part),
    };
    let root = match root {
        Some(ident) => quote!(#ident),
        None => quote_spanned!(span=> self),
    };
    let fields = fields.iter().map(|f| field_access(f, model.key_span));
    quote_spanned!(span=> .#method(&#root #(#fields)*))
}

/// `.field`, `.0`, `.r#type` or `.method()` in a placeholder's path.
fn field_access(field: &str, span: Span) -> TokenStream {
    if let Ok(index) = field.parse::<u32>() {
        let index = syn::Index { index, span };
        return quote!(.#index);
    }
    let ident = |name: &str| match name.strip_prefix("r#") {
        Some(raw) => Ident::new_raw(raw, span),
        None => Ident::new(name, span),
    };
    match field.strip_suffix("()") {
        Some(method) => {
            let method = ident(method);
            quote!(.#method())
        }
        None => {
            let field = ident(field);
            quote!(.#field)
        }
    }
}

/// How many generic arguments the cached function's path shows: its type and const
/// parameters (lifetimes are erased).
fn own_generic_count(model: &Model) -> usize {
    let params = &model.item.sig.generics.params;
    params
        .iter()
        .filter(|p| !matches!(p, syn::GenericParam::Lifetime(_)))
        .count()
}
