//! `batch`: the argument holding the ids, the key's placeholder that stands for one of them,
//! and the options a batch read does not take. The key is then resolved as a single read's,
//! with the ids' argument replaced by one id of their type.

use proc_macro2::Span;
use syn::spanned::Spanned as _;
use syn::{GenericArgument, Ident, PathArguments, Type, TypeParamBound};

use super::signature::Param;
use crate::args::Args;
use crate::errors::Errors;
use crate::template::Segment;

/// A batch function's ids.
#[derive(Clone)]
pub(crate) struct Batch {
    /// The argument holding the ids, as declared.
    pub(crate) ids: Param,
    /// The key's placeholder for one id, typed as one id.
    pub(crate) id: Param,
    pub(crate) kind: Kind,
}

/// How the ids are held: what the expansion reads them from, and gives the body the missing
/// ones as.
#[derive(Clone)]
pub(crate) enum Kind {
    /// `&[K]`.
    Slice,
    /// `&Vec<K>`, `&HashSet<K>`, `&BTreeSet<K>`: `owned` is the collection behind the reference.
    Borrowed { owned: Box<Type> },
    /// `Vec<K>` or `impl IntoIterator<Item = K>`: the body is given a `Vec<K>`.
    Owned,
    /// `HashSet<K>`, `BTreeSet<K>`: collected into that type.
    Collected,
}

const WHAT: &str = "`batch` reads many ids: give the function one argument holding them, e.g. `ids: &[u64]` (or a `Vec<K>`, a `HashSet<K>`, a `BTreeSet<K>` or an `impl IntoIterator<Item = K>`), with `K` the id's type";

/// The batch's ids and its id placeholder, with `params` changed so that the key resolves:
/// the ids' argument becomes the id. `None`, with the problem recorded, if the function is not
/// one a batch read can be made of.
pub(super) fn batch_params(
    sig: &syn::Signature,
    params: &mut [Param],
    args: &Args,
    at: Span,
    errors: &mut Errors,
) -> Option<Batch> {
    refuse_options(sig, args, errors);
    let Some((segments, lit)) = &args.key else {
        if !args.key_invalid {
            let message = "a `batch` key names one id: add e.g. key = \"product:<id>:v1\", where `<id>` stands for each of the ids";
            errors.at(at, message);
        }
        return None;
    };
    let roots: Vec<&str> = segments
        .iter()
        .filter_map(|segment| match segment {
            Segment::Placeholder { root, .. } => Some(root.as_str()),
            Segment::Text(_) => None,
        })
        .collect();
    let index = ids_param(sig, params, &roots, lit.span(), errors)?;
    let id_name = id_placeholder(params, index, &roots, lit.span(), errors)?;
    let (kind, id_ty) = collection(&params[index].ty)?;
    let id = Param {
        ident: Ident::new(id_name, lit.span()),
        ty: id_ty,
    };
    let ids = std::mem::replace(&mut params[index], id.clone());
    Some(Batch { ids, id, kind })
}

/// Which parameter holds the ids: the one collection of them the key (whose placeholders
/// start with `roots`) does not name.
fn ids_param(
    sig: &syn::Signature,
    params: &[Param],
    roots: &[&str],
    key: Span,
    errors: &mut Errors,
) -> Option<usize> {
    let named = |param: &Param| roots.iter().any(|root| param.ident == root);
    let candidates: Vec<usize> = (0..params.len())
        .filter(|&i| !named(&params[i]) && collection(&params[i].ty).is_some())
        .collect();
    let named_collection = params
        .iter()
        .find(|p| named(p) && collection(&p.ty).is_some());
    if let (true, Some(param)) = (candidates.is_empty(), named_collection) {
        let message = format!(
            "`<{}>` names the collection of ids: a `batch` key names one id, e.g. key = \"product:<id>:v1\", where `<id>` stands for each of `{}`",
            param.ident, param.ident
        );
        errors.at(key, message);
        return None;
    }
    let [index] = candidates[..] else {
        let message = match candidates.len() {
            0 => WHAT.to_owned(),
            _ => "`batch` reads one collection of ids: this function takes several; name the others in the key, or take them as one".to_owned(),
        };
        errors.at(sig.ident.span(), message);
        return None;
    };
    Some(index)
}

/// The key's one placeholder that names no parameter: it stands for each id of
/// `params[index]`.
fn id_placeholder<'a>(
    params: &[Param],
    index: usize,
    roots: &[&'a str],
    key: Span,
    errors: &mut Errors,
) -> Option<&'a str> {
    let is_param = |root: &&&str| **root == "self" || params.iter().any(|p| p.ident == **root);
    let mut free = roots.iter().filter(|root| !is_param(root));
    let Some(id_name) = free.next() else {
        let message = format!(
            "a `batch` key names one id with a placeholder that is not an argument, e.g. key = \"product:<id>:v1\": `<id>` stands for each of `{}`",
            params[index].ident
        );
        errors.at(key, message);
        return None;
    };
    if let Some(other) = free.find(|root| *root != id_name) {
        let message = format!(
            "a `batch` key names one id: `<{id_name}>` stands for each id, and `<{other}>` is neither an argument nor the same id"
        );
        errors.at(key, message);
        return None;
    }
    Some(id_name)
}

/// The options a batch read does not take, each reported where it is written.
fn refuse_options(sig: &syn::Signature, args: &Args, errors: &mut Errors) {
    let refused = [
        ("stale", args.stale.as_ref().map(|s| s.span)),
        ("refresh", args.refresh.as_ref().map(|s| s.span)),
        ("fail_safe", args.fail_safe.as_ref().map(|s| s.span)),
        ("back_off", args.back_off.as_ref().map(|s| s.span)),
        ("background", args.background.as_ref().map(|s| s.span)),
        ("cache_if", args.cache_if.as_ref().map(|e| e.span())),
        ("ttl = EXPR", args.ttl_expr.as_ref().map(|e| e.span())),
    ];
    for (name, span) in refused {
        if let Some(span) = span {
            let message = format!(
                "`{name}` does not apply to a `batch` function yet: read those ids through a single-id function with the same key, which shares their entries"
            );
            errors.at(span, message);
        }
    }
    if let Some(param) = sig.generics.type_params().next() {
        let message = "a `batch` function cannot be generic: name the id's and the value's types";
        errors.at(param.ident.span(), message);
    }
    let not_shared =
        |r: &syn::Receiver| !matches!(r.kind, syn::ReceiverKind::Reference(_, _, None));
    if sig.receiver().is_some_and(not_shared) {
        let message = "a `batch` function may run its body more than once: take `&self`";
        errors.at(
            sig.receiver().map_or(sig.ident.span(), |r| r.span()),
            message,
        );
    }
}

/// How `ty` holds ids, and the id's type, if it is a collection of them.
fn collection(ty: &Type) -> Option<(Kind, Type)> {
    match ty {
        Type::Reference(reference) if reference.mutability.is_none() => match &*reference.elem {
            Type::Slice(slice) => Some((Kind::Slice, (*slice.elem).clone())),
            owned => {
                let id = owned_collection(owned)?;
                let owned = Box::new(owned.clone());
                Some((Kind::Borrowed { owned }, id))
            }
        },
        Type::ImplTrait(bounds) => bounds.bounds.iter().find_map(into_iterator_item),
        Type::Path(path) => {
            let id = owned_collection(ty)?;
            let last = path.path.segments.last()?;
            let kind = if last.ident == "Vec" {
                Kind::Owned
            } else {
                Kind::Collected
            };
            Some((kind, id))
        }
        Type::Paren(inner) => collection(&inner.elem),
        _ => None,
    }
}

/// The id type of a `Vec<K>`, `HashSet<K>` or `BTreeSet<K>`.
fn owned_collection(ty: &Type) -> Option<Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    let known = ["Vec", "HashSet", "BTreeSet"];
    if !known.iter().any(|name| last.ident == name) {
        return None;
    }
    let PathArguments::AngleBracketed(generics) = &last.arguments else {
        return None;
    };
    generics.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty.clone()),
        _ => None,
    })
}

/// `IntoIterator<Item = K>`'s `K`.
fn into_iterator_item(bound: &TypeParamBound) -> Option<(Kind, Type)> {
    let TypeParamBound::Trait(bound) = bound else {
        return None;
    };
    let last = bound.path.segments.last()?;
    if last.ident != "IntoIterator" {
        return None;
    }
    let PathArguments::AngleBracketed(generics) = &last.arguments else {
        return None;
    };
    generics.args.iter().find_map(|arg| match arg {
        GenericArgument::AssocType(item) if item.ident == "Item" => {
            Some((Kind::Owned, item.ty.clone()))
        }
        _ => None,
    })
}
