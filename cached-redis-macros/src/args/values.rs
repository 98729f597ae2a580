//! The attribute's values: string literals read as durations (or `near`'s `"off"`), jitter,
//! codecs and sizes, `beta`, the skipped arguments and booleans, each problem recorded at the
//! literal.

use std::time::Duration;

use syn::meta::ParseNestedMeta;
use syn::{Expr, LitStr};

use super::Spanned;
use crate::duration::parse_duration;
use crate::errors::Errors;

/// A string literal argument read by `parse`, or `None` with the problem recorded at the
/// literal.
pub(super) fn parsed<T>(
    meta: &ParseNestedMeta<'_>,
    name: &str,
    example: &str,
    parse: impl Fn(&str) -> Result<T, String>,
    errors: &mut Errors,
) -> syn::Result<Option<Spanned<T>>> {
    let Some(lit) = string_literal(meta, name, example, errors)? else {
        return Ok(None);
    };
    match parse(&lit.value()) {
        Ok(value) => Ok(Some(Spanned {
            value,
            span: lit.span(),
        })),
        Err(message) => {
            errors.at(lit.span(), message);
            Ok(None)
        }
    }
}

/// `refresh`'s one value.
pub(super) fn parse_refresh(text: &str) -> Result<(), String> {
    match text {
        "early" => Ok(()),
        _ => Err(format!(
            "unknown refresh `{text}`; the one refresh is \"early\" (XFetch: hits refresh an entry shortly before it expires)"
        )),
    }
}

/// `beta = 1.0`: a number in (0, 1000], or `None` with the problem recorded at it.
pub(super) fn beta(
    meta: &ParseNestedMeta<'_>,
    errors: &mut Errors,
) -> syn::Result<Option<Spanned<f64>>> {
    let lit: syn::Lit = meta.value()?.parse()?;
    let value = match &lit {
        syn::Lit::Float(f) => f.base10_parse::<f64>().ok(),
        syn::Lit::Int(i) => i.base10_parse::<u32>().ok().map(f64::from),
        _ => None,
    };
    match value {
        Some(value) if value > 0.0 && value <= 1000.0 => Ok(Some(Spanned {
            value,
            span: lit.span(),
        })),
        _ => {
            errors.at(
                lit.span(),
                "`beta` must be a number in (0, 1000], such as `beta = 1.0` (above 1 refreshes earlier)",
            );
            Ok(None)
        }
    }
}

/// The argument names of `skip = "a, b"`, without `r#`.
pub(super) fn skipped(lit: &LitStr) -> Vec<Spanned<String>> {
    lit.value()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| Spanned {
            value: n.trim_start_matches("r#").to_owned(),
            span: lit.span(),
        })
        .collect()
}

/// `name = true` or `false`.
pub(super) fn boolean(meta: &ParseNestedMeta<'_>) -> syn::Result<Spanned<bool>> {
    let lit: syn::LitBool = meta.value()?.parse()?;
    Ok(Spanned {
        value: lit.value,
        span: lit.span,
    })
}

/// The options the runtime bounds to a day (a lease or a load longer than that is a mistake);
/// a `ttl` or `none_ttl` may be longer.
const BOUNDED_TO_A_DAY: [&str; 6] = [
    "lock_ttl",
    "max_load",
    "near",
    "stale",
    "fail_safe",
    "back_off",
];
const A_DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Reads a non-zero duration literal (at most a day where the runtime says so).
pub(super) fn duration(
    meta: &ParseNestedMeta<'_>,
    name: &str,
    errors: &mut Errors,
) -> syn::Result<Option<Spanned<Duration>>> {
    let value: Expr = meta.value()?.parse()?;
    Ok(duration_of(&value, name, errors))
}

/// `near = "5s"`, or `near = "off"`: no copies, even on a cache with `near_by_default`.
pub(super) fn near(
    meta: &ParseNestedMeta<'_>,
    errors: &mut Errors,
) -> syn::Result<Option<Spanned<Option<Duration>>>> {
    let value: Expr = meta.value()?.parse()?;
    if let Expr::Lit(syn::ExprLit {
        lit: syn::Lit::Str(lit),
        ..
    }) = &value
        && lit.value() == "off"
    {
        return Ok(Some(Spanned {
            value: None,
            span: lit.span(),
        }));
    }
    Ok(duration_of(&value, "near", errors).map(|d| Spanned {
        value: Some(d.value),
        span: d.span,
    }))
}

/// A non-zero duration literal (at most a day where the runtime says so), or `None` with the
/// problem recorded.
pub(super) fn duration_of(
    value: &Expr,
    name: &str,
    errors: &mut Errors,
) -> Option<Spanned<Duration>> {
    let lit = literal_of(value, name, "60s", errors)?;
    match parse_duration(&lit.value()) {
        Ok(d) if d.as_millis() == 0 => {
            let why = match name {
                "stale" | "fail_safe" => "leave it out to keep no entry past its TTL",
                "back_off" => "a failing key would be loaded by every call",
                _ => "an entry that never lives caches nothing",
            };
            errors.at(lit.span(), format!("`{name}` must be at least 1ms; {why}"));
            None
        }
        Ok(d) if BOUNDED_TO_A_DAY.contains(&name) && d > A_DAY => {
            errors.at(
                lit.span(),
                format!(
                    "`{name}` must be at most a day (\"1d\"), as `Policy::with_{name}` requires"
                ),
            );
            None
        }
        Ok(value) => Some(Spanned {
            value,
            span: lit.span(),
        }),
        Err(message) => {
            let or = if name == "near" { ", or \"off\"" } else { "" };
            errors.at(lit.span(), format!("invalid `{name}`: {message}{or}"));
            None
        }
    }
}

/// The string literal an argument takes; anything else is recorded as an error that shows
/// what to write (`ttl = 60` gets `write ttl = "60s"`).
pub(super) fn string_literal(
    meta: &ParseNestedMeta<'_>,
    name: &str,
    example: &str,
    errors: &mut Errors,
) -> syn::Result<Option<LitStr>> {
    let value: Expr = meta.value()?.parse()?;
    Ok(literal_of(&value, name, example, errors))
}

pub(super) fn literal_of(
    value: &Expr,
    name: &str,
    example: &str,
    errors: &mut Errors,
) -> Option<LitStr> {
    let written = quote::ToTokens::to_token_stream(value).to_string();
    let suggestion = match value {
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => return Some(lit.clone()),
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(int),
            ..
        }) => match name {
            "jitter" => format!("{}%", int.base10_digits()),
            "compress_above" => format!("{}B", int.base10_digits()),
            "codec" => example.to_owned(),
            _ => format!("{}s", int.base10_digits()),
        },
        Expr::Lit(_) => example.to_owned(),
        _ => {
            errors.at(
                syn::spanned::Spanned::span(value),
                format!(
                    "`{name}` takes a string literal such as `{name} = \"{example}\"`, not `{written}`; only `ttl` may be an expression (a `Duration`, computed once)"
                ),
            );
            return None;
        }
    };
    errors.at(
        syn::spanned::Spanned::span(value),
        format!(
            "`{name}` takes a string with a unit, not `{written}`: write `{name} = \"{suggestion}\"`"
        ),
    );
    None
}
