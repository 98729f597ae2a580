//! What the signature alone decides: an `async fn`, a `ttl` with a jitter below it, a named
//! return type, and the named parameters the key and the helpers are made of.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned as _;
use syn::{FnArg, Ident, Pat, ReturnType, Type};

use crate::args::{Args, Spanned};
use crate::duration::JitterSpec;
use crate::errors::Errors;
use crate::tokens::mentions;

/// A named parameter of the function.
#[derive(Clone)]
pub(crate) struct Param {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}

/// An `async fn`, and a `ttl` (with a jitter below it).
pub(super) fn check_signature_and_ttl(sig: &syn::Signature, args: &Args, errors: &mut Errors) {
    if sig.asyncness.is_none() {
        errors.at(
            sig.fn_token.span,
            "#[redis_cached] works on `async fn` only: caching reads Redis, which is asynchronous; write `async fn`",
        );
    }
    if !args.given("ttl") {
        errors.at(
            Span::call_site(),
            "missing `ttl`: every entry must expire; add e.g. ttl = \"60s\"",
        );
    }
    if let (Some(ttl), Some(jitter)) = (&args.ttl, &args.jitter) {
        check_jitter(ttl, jitter, errors);
    }
}

fn check_jitter(ttl: &Spanned<Duration>, jitter: &Spanned<JitterSpec>, errors: &mut Errors) {
    if let JitterSpec::Fixed(j) = jitter.value
        && j >= ttl.value
    {
        errors.at(
            jitter.span,
            format!(
                "`jitter` ({j:?}) must be smaller than `ttl` ({:?}): the stored TTL is drawn from [ttl - jitter, ttl]",
                ttl.value
            ),
        );
    }
}

/// The return type. How it is cached is decided by its type in the expansion, not here, so
/// type aliases of `Result` and `Option` work.
pub(super) fn return_type(sig: &syn::Signature, errors: &mut Errors) -> Type {
    match &sig.output {
        ReturnType::Default => {
            errors.at(
                sig.ident.span(),
                "a cached function must return the value to cache, e.g. `-> Result<User, DbError>`",
            );
        }
        ReturnType::Type(_, ty) if matches!(**ty, Type::ImplTrait(_)) => {
            errors.at(
                ty.span(),
                "the cached type must be named: `impl Trait` cannot be deserialized from Redis",
            );
        }
        ReturnType::Type(_, ty) => return (**ty).clone(),
    }
    // Only the helpers' stubs are generated after an error, and they do not name it.
    syn::parse_quote!(())
}

/// The function's named parameters. When the key is derived from all of them, a parameter
/// without a name is an error.
pub(super) fn named_params(
    sig: &syn::Signature,
    need_all: bool,
    errors: &mut Errors,
) -> Vec<Param> {
    let mut params = Vec::new();
    for input in &sig.inputs {
        let FnArg::Typed(typed) = input else { continue };
        match &*typed.pat {
            Pat::Ident(pat) if pat.subpat.is_none() => params.push(Param {
                ident: pat.ident.clone(),
                ty: (*typed.ty).clone(),
            }),
            other if need_all => errors.at(
                other.span(),
                "without a `key`, the key is made of every argument, so each needs a plain name; name this argument or write a `key` template",
            ),
            _ => {}
        }
    }
    params
}

/// Marks the parameters `tokens` mention (the `cache` expression may use them, so the
/// invalidation helper needs them too).
pub(super) fn mark_mentioned(tokens: &TokenStream, params: &[Param], used: &mut [bool]) {
    for (used, param) in used.iter_mut().zip(params) {
        *used |= mentions(tokens, &param.ident);
    }
}
