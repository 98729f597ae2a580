//! The key template resolved against the signature: each placeholder becomes a parameter, the
//! receiver or a type parameter, and a template without `key` is derived from the arguments.

use proc_macro2::Span;
use syn::{Ident, Type};

use super::signature::Param;
use crate::args::Args;
use crate::errors::Errors;
use crate::template::{Segment, show};
use crate::tokens::{mentions, unraw};

/// A key placeholder resolved against the signature.
pub(crate) enum Part {
    Text(String),
    /// A parameter (or `self` when `root` is `None`) and a path of fields and method calls
    /// (`to_lowercase()`) into it, rendered as a `KeyPart` or, with `display`, through
    /// `Display`.
    Value {
        root: Option<Ident>,
        fields: Vec<String>,
        display: bool,
    },
    /// A type parameter, rendered as its type's name.
    TypeName(Ident),
}

/// What a placeholder can name.
pub(super) struct Scope<'a> {
    pub(super) params: &'a [Param],
    has_receiver: bool,
    type_params: Vec<Ident>,
}

impl<'a> Scope<'a> {
    pub(super) fn new(params: &'a [Param], sig: &syn::Signature) -> Self {
        Scope {
            params,
            has_receiver: sig.receiver().is_some(),
            type_params: sig
                .generics
                .type_params()
                .map(|t| t.ident.clone())
                .collect(),
        }
    }
}

/// The template's segments and the span errors in it point at: the `key` written, or one
/// derived from the arguments (see [`derived_template`]), reported at the attribute.
pub(super) fn template(
    params: &[Param],
    args: &Args,
    handle: Option<&Ident>,
) -> (Vec<Segment>, Span) {
    match &args.key {
        Some((segments, lit)) => (segments.clone(), lit.span()),
        None => (derived_template(params, args, handle), Span::call_site()),
    }
}

/// `get_user(id, region)` becomes `<path>:<id>:<region>`; the expansion writes the path of the
/// function in front (`app::users::get_user`), so same-named functions never share entries.
/// The argument the `cache` expression starts from (`handle`) is not data and is left out, nor
/// are the arguments `skip` names.
fn derived_template(params: &[Param], args: &Args, handle: Option<&Ident>) -> Vec<Segment> {
    // Only the argument the cache is reached through (`cache`, `&state.cache`) is a handle;
    // one that merely appears in the expression (`&shards[id % 4]`) selects data, and stays.
    let skipped = |p: &Param| args.skip.iter().any(|s| s.value == unraw(&p.ident));
    let mut segments = Vec::new();
    for param in params
        .iter()
        .filter(|p| handle != Some(&p.ident) && !skipped(p))
    {
        segments.push(Segment::Text(":".to_owned()));
        segments.push(Segment::Placeholder {
            root: unraw(&param.ident),
            fields: Vec::new(),
            display: false,
        });
    }
    segments
}

/// The key's parts, and for each parameter whether the key uses it.
pub(super) fn resolve(
    segments: &[Segment],
    span: Span,
    scope: &Scope<'_>,
    errors: &mut Errors,
) -> (Vec<Part>, Vec<bool>) {
    let mut parts = Vec::new();
    let mut used = vec![false; scope.params.len()];
    for segment in segments {
        let Segment::Placeholder {
            root,
            fields,
            display,
        } = segment
        else {
            if let Segment::Text(text) = segment {
                parts.push(Part::Text(text.clone()));
            }
            continue;
        };
        let value = |root| Part::Value {
            root,
            fields: fields.clone(),
            display: *display,
        };
        if root == "self" {
            if !scope.has_receiver {
                let shown = show(segment);
                let message =
                    format!("{shown} uses `self`, but this function has no `self` parameter");
                errors.at(span, message);
            }
            parts.push(value(None));
        } else if let Some(i) = scope.params.iter().position(|p| unraw(&p.ident) == *root) {
            used[i] = true;
            parts.push(value(Some(scope.params[i].ident.clone())));
        } else if let Some(t) = type_param(root, scope) {
            if !fields.is_empty() || *display {
                let message = format!(
                    "{} names the type parameter `{root}`: write `<{root}>` alone",
                    show(segment)
                );
                errors.at(span, message);
            }
            parts.push(Part::TypeName(t));
        } else {
            errors.at(span, unknown_placeholder(segment, scope));
        }
    }
    (parts, used)
}

/// The type parameter a placeholder names: one of the function's, or, capitalised as type
/// parameters are, one the macro cannot see (the `impl`'s: `impl<T> Repo<T>`), left for the
/// compiler to resolve.
fn type_param(root: &str, scope: &Scope<'_>) -> Option<Ident> {
    if let Some(t) = scope.type_params.iter().find(|t| *t == root) {
        return Some(t.clone());
    }
    let capitalised = root.chars().next().is_some_and(|c| c.is_ascii_uppercase());
    capitalised.then(|| Ident::new(root, Span::call_site()))
}

fn unknown_placeholder(segment: &Segment, scope: &Scope<'_>) -> String {
    format!(
        "{} in the key template names no argument of this function; {}",
        show(segment),
        known_arguments(scope)
    )
}

/// "the arguments are `id`, `region`": what a misspelt name could have meant.
pub(super) fn known_arguments(scope: &Scope<'_>) -> String {
    let names: Vec<String> = scope
        .params
        .iter()
        .map(|p| format!("`{}`", p.ident))
        .collect();
    match names.as_slice() {
        [] => "this function has no named arguments".to_owned(),
        [only] => format!("its only argument is {only}"),
        _ => format!("the arguments are {}", names.join(", ")),
    }
}

/// A generic function whose return type holds a type parameter stores a different type per
/// instance: an explicit template must tell them apart (`<T>`), or the instances would evict
/// each other's entries on every call.
pub(super) fn check_type_params_named(
    key: &[Part],
    ret: &Type,
    scope: &Scope<'_>,
    span: Span,
    errors: &mut Errors,
) {
    let ret_tokens = quote::ToTokens::to_token_stream(ret);
    let in_ret: Vec<&Ident> = scope
        .type_params
        .iter()
        .filter(|t| mentions(&ret_tokens, t))
        .collect();
    let named = |t: &Ident| key.iter().any(|p| matches!(p, Part::TypeName(n) if n == t));
    if let Some(t) = in_ret.iter().find(|t| !named(t)) {
        errors.at(
            span,
            format!(
                "the return type depends on the type parameter `{t}`, so each instance stores a different type: name it in the key (`<{t}>` renders its type's name), or `setting::<u32>` and `setting::<String>` would share one entry"
            ),
        );
    }
}
