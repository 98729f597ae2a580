//! What the `cache = EXPR` argument says about the arguments: the one it starts from, whether it
//! picks a cache by the key, and whether its handle must be cloned.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens as _;
use syn::{Ident, Type};

use super::key::Part;
use super::signature::Param;
use crate::tokens::mentions;

/// The variable an expression such as `&state.caches[i].main` starts from (`state`).
pub(super) fn root_ident(expr: &syn::Expr) -> Option<Ident> {
    match expr {
        syn::Expr::Reference(e) => root_ident(&e.expr),
        syn::Expr::Paren(e) => root_ident(&e.expr),
        syn::Expr::Unary(e) if matches!(e.op, syn::UnOp::Deref(_)) => root_ident(&e.expr),
        syn::Expr::Field(e) => root_ident(&e.base),
        syn::Expr::Index(e) => root_ident(&e.expr),
        syn::Expr::MethodCall(e) => root_ident(&e.receiver),
        syn::Expr::Path(e) => e.path.get_ident().cloned(),
        _ => None,
    }
}

/// Whether the cache handle must be cloned (see `Model::clone_cache`).
pub(super) fn clone_cache(
    sig: &syn::Signature,
    params: &[Param],
    cache: Option<&syn::Expr>,
) -> bool {
    let Some(root) = cache.and_then(root_ident) else {
        return false;
    };
    if root == "self" {
        return sig
            .receiver()
            .is_some_and(|r| !matches!(r.kind, syn::ReceiverKind::Reference(_, _, None)));
    }
    params
        .iter()
        .any(|p| p.ident == root && !matches!(p.ty, Type::Reference(_)))
}

/// Whether what `cache` selects its handle by (an index, a method's or a call's arguments: all
/// but the path it starts from) mentions an argument in the key, or `self` when the key reads
/// the receiver.
pub(super) fn chosen_by_key(
    cache: &syn::Expr,
    params: &[Param],
    in_key: &[bool],
    key: &[Part],
) -> bool {
    let mut selectors = TokenStream::new();
    selectors_of(cache, &mut selectors);
    let by_argument = params
        .iter()
        .zip(in_key)
        .any(|(p, keyed)| *keyed && mentions(&selectors, &p.ident));
    let self_in_key = key
        .iter()
        .any(|part| matches!(part, Part::Value { root: None, .. }));
    let by_receiver = self_in_key && mentions(&selectors, &Ident::new("self", Span::call_site()));
    by_argument || by_receiver
}

/// The parts of a cache expression that choose among handles (see [`chosen_by_key`]).
fn selectors_of(expr: &syn::Expr, out: &mut TokenStream) {
    match expr {
        syn::Expr::Reference(e) => selectors_of(&e.expr, out),
        syn::Expr::Paren(e) => selectors_of(&e.expr, out),
        syn::Expr::Unary(e) if matches!(e.op, syn::UnOp::Deref(_)) => selectors_of(&e.expr, out),
        syn::Expr::Field(e) => selectors_of(&e.base, out),
        syn::Expr::Index(e) => {
            selectors_of(&e.expr, out);
            e.index.to_tokens(out);
        }
        syn::Expr::MethodCall(e) => {
            selectors_of(&e.receiver, out);
            e.args.to_tokens(out);
        }
        syn::Expr::Path(_) => {}
        other => other.to_tokens(out),
    }
}
