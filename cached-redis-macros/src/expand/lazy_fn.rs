//! The item under the attribute, parsed with its body left as tokens.

use proc_macro2::{TokenStream, TokenTree};
use quote::quote;
use syn::ItemFn;

/// An `fn` whose body is kept as tokens, not parsed: a syntax error in the body is then
/// reported by the compiler where it is, not as "not a function" at the attribute.
pub(super) struct LazyFn {
    /// The function with an empty block.
    pub(super) item: ItemFn,
    /// The body's braces and what they hold.
    pub(super) body: TokenStream,
}

impl syn::parse::Parse for LazyFn {
    fn parse(input: syn::parse::ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(syn::Attribute::parse_outer)?;
        let vis: syn::Visibility = input.parse()?;
        let sig: syn::Signature = input.parse()?;
        let mut body: TokenTree = input.parse()?;
        // A body passed through `macro_rules!` (`$body:block`) arrives wrapped in an invisible
        // group: look through it.
        while let TokenTree::Group(group) = &body
            && group.delimiter() == proc_macro2::Delimiter::None
            && let Some(inner) = single_tree(group.stream())
        {
            body = inner;
        }
        let TokenTree::Group(body) = body else {
            return Err(syn::Error::new(body.span(), "expected the function's body"));
        };
        if body.delimiter() != proc_macro2::Delimiter::Brace {
            return Err(syn::Error::new(body.span(), "expected the function's body"));
        }
        let item = syn::parse2(quote!(#(#attrs)* #vis #sig {}))?;
        Ok(LazyFn {
            item,
            body: quote!(#body),
        })
    }
}

/// The one token tree `stream` holds, if it holds exactly one.
fn single_tree(stream: TokenStream) -> Option<TokenTree> {
    let mut trees = stream.into_iter();
    let first = trees.next()?;
    trees.next().is_none().then_some(first)
}
