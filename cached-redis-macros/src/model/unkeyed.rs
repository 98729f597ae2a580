//! The arguments an explicit template leaves out: each must be a handle, exempt, or named in
//! `skip`, and every name in `skip` must be an argument.

use syn::{Ident, Type};

use super::key::{Scope, known_arguments};
use super::signature::{Param, mark_mentioned};
use crate::args::Args;
use crate::errors::Errors;
use crate::tokens::unraw;

/// The arguments an explicit template may leave out without `skip`: the one the cache is
/// reached through (`handle`: `&shards[id % 4]` reaches it through `shards`; `id` still selects
/// data), and what `cache_if` captures, which does not select the entry.
pub(super) fn exempt_from_key(params: &[Param], args: &Args, handle: Option<&Ident>) -> Vec<bool> {
    let mut exempt: Vec<bool> = params.iter().map(|p| handle == Some(&p.ident)).collect();
    if let Some(predicate) = &args.cache_if {
        let tokens = quote::ToTokens::to_token_stream(predicate);
        mark_mentioned(&tokens, params, &mut exempt);
    }
    exempt
}

/// An argument of a type that identifies data (an integer, a string, an id...) that the
/// template leaves out would let every value of it share one entry: an error, unless `skip`
/// names it. Handles (`&PgPool`, `&Cache`, a struct of one's own) stay out without ceremony.
pub(super) fn check_unkeyed(
    scope: &Scope<'_>,
    in_key: &[bool],
    exempt: &[bool],
    args: &Args,
    errors: &mut Errors,
) {
    for (i, param) in scope.params.iter().enumerate() {
        let skipped = args.skip.iter().any(|s| s.value == unraw(&param.ident));
        if in_key[i] || exempt[i] || skipped || !identifies_data(&param.ty) {
            continue;
        }
        let name = unraw(&param.ident);
        errors.at(
            param.ident.span(),
            format!(
                "the argument `{name}` is not in the key template, so every `{name}` would share one entry: add `<{name}>` to `key`, or write `skip = \"{name}\"` if it does not change the result"
            ),
        );
    }
}

/// Every name in `skip` must be an argument.
pub(super) fn check_skip_names(scope: &Scope<'_>, args: &Args, errors: &mut Errors) {
    for skip in &args.skip {
        if !scope.params.iter().any(|p| unraw(&p.ident) == skip.value) {
            let message = format!(
                "`skip` names `{}`, which is no argument of this function; {}",
                skip.value,
                known_arguments(scope)
            );
            errors.at(skip.span, message);
        }
    }
}

/// Whether a type, by its name, is one that selects data: the types `KeyPart` covers (through
/// references, `Option`, `Vec`, slices and smart pointers).
fn identifies_data(ty: &Type) -> bool {
    const DATA: [&str; 26] = [
        "u8",
        "u16",
        "u32",
        "u64",
        "u128",
        "usize",
        "i8",
        "i16",
        "i32",
        "i64",
        "i128",
        "isize",
        "bool",
        "char",
        "str",
        "String",
        "Uuid",
        "NaiveDate",
        "NaiveDateTime",
        "NaiveTime",
        "DateTime",
        "Date",
        "PrimitiveDateTime",
        "Time",
        "OffsetDateTime",
        "Ulid",
    ];
    const WRAPPERS: [&str; 6] = ["Option", "Vec", "Box", "Rc", "Arc", "Cow"];
    match ty {
        Type::Reference(r) => identifies_data(&r.elem),
        Type::Slice(s) => identifies_data(&s.elem),
        Type::Array(a) => identifies_data(&a.elem),
        Type::Paren(p) => identifies_data(&p.elem),
        Type::Group(g) => identifies_data(&g.elem),
        Type::Tuple(t) => t.elems.iter().any(identifies_data),
        Type::Path(p) => {
            let Some(last) = p.path.segments.last() else {
                return false;
            };
            let name = last.ident.to_string();
            if DATA.contains(&name.as_str()) {
                return true;
            }
            let syn::PathArguments::AngleBracketed(inner) = &last.arguments else {
                return false;
            };
            WRAPPERS.contains(&name.as_str())
                && inner
                    .args
                    .iter()
                    .any(|a| matches!(a, syn::GenericArgument::Type(t) if identifies_data(t)))
        }
        _ => false,
    }
}
