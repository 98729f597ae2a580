//! Questions about identifiers and the token streams that hold them, asked by both the model
//! and the expansion.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens as _;
use syn::Ident;

/// Whether `tokens` hold the identifier `ident` anywhere.
pub(crate) fn mentions(tokens: &TokenStream, ident: &Ident) -> bool {
    tokens.clone().into_iter().any(|t| match t {
        TokenTree::Ident(i) => i == *ident,
        TokenTree::Group(g) => mentions(&g.stream(), ident),
        _ => false,
    })
}

/// An identifier's name without `r#`: how a placeholder spells `r#type` (`<type>`), and what a
/// helper's name is built from.
pub(crate) fn unraw(ident: &Ident) -> String {
    ident.to_string().trim_start_matches("r#").to_owned()
}

/// Whether `ty` holds a lifetime, a reference or `Self`: a type that may borrow, which a
/// `'static` bound would reject with an error rather than pass over.
pub(crate) fn may_borrow(ty: &syn::Type) -> bool {
    fn any_borrow(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            TokenTree::Punct(p) => matches!(p.as_char(), '\'' | '&'),
            TokenTree::Ident(i) => i == "Self",
            TokenTree::Group(g) => any_borrow(g.stream()),
            TokenTree::Literal(_) => false,
        })
    }
    any_borrow(ty.to_token_stream())
}

/// Whether `ty` names what reads as a type parameter of an enclosing `impl` (a single capital
/// letter: `T`, `E`), which may be a reference type; the expansion cannot see that `impl`.
pub(crate) fn names_a_type_parameter(ty: &syn::Type) -> bool {
    fn any(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            TokenTree::Ident(i) => {
                let name = i.to_string();
                name.len() == 1 && name.chars().all(|c| c.is_ascii_uppercase())
            }
            TokenTree::Group(g) => any(g.stream()),
            _ => false,
        })
    }
    any(ty.to_token_stream())
}

/// Whether `ty` is or holds a macro invocation (`row!()`), whose expansion the attribute does
/// not see.
pub(crate) fn holds_a_macro(ty: &syn::Type) -> bool {
    fn any(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            TokenTree::Punct(p) => p.as_char() == '!',
            TokenTree::Group(g) => any(g.stream()),
            _ => false,
        })
    }
    any(ty.to_token_stream())
}

/// Whether `ty` is or holds an `impl Trait` or one of `generics`' type parameters.
pub(crate) fn names_generics(generics: &syn::Generics, ty: &syn::Type) -> bool {
    let tokens = ty.to_token_stream();
    let impl_trait = Ident::new("impl", Span::call_site());
    mentions(&tokens, &impl_trait) || generics.type_params().any(|t| mentions(&tokens, &t.ident))
}
