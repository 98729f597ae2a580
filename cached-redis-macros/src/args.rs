//! The attribute's arguments: syntax is parsed here, values are checked as they are read, and
//! problems are recorded so that every bad argument is reported at once.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::{Expr, LitStr};

use crate::duration::{JitterSpec, parse_duration, parse_jitter};
use crate::errors::Errors;
use crate::format::{CodecSpec, parse_codec, parse_size};
use crate::template::{self, Segment};

const KNOWN: &str = "`key`, `ttl`, `jitter`, `lock_ttl`, `max_load`, `none_ttl`, `near`, `stale`, `refresh`, `beta`, `fail_safe`, `back_off`, `codec`, `compress_above`, `cache`, `cache_if`, `skip`, `helpers`, `background` and `batch`";

/// A value with the span of the literal it came from.
#[derive(Debug, Clone)]
pub(crate) struct Spanned<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

#[derive(Default)]
pub(crate) struct Args {
    /// The template and its literal.
    pub(crate) key: Option<(Vec<Segment>, LitStr)>,
    pub(crate) ttl: Option<Spanned<Duration>>,
    /// `ttl = EXPR`: a `Duration` computed once, at the first call (a constant, configuration).
    pub(crate) ttl_expr: Option<Expr>,
    pub(crate) jitter: Option<Spanned<JitterSpec>>,
    pub(crate) lock_ttl: Option<Spanned<Duration>>,
    pub(crate) max_load: Option<Spanned<Duration>>,
    pub(crate) none_ttl: Option<Spanned<Duration>>,
    /// How long decoded values are also kept in process memory (`None` inside: `"off"`).
    pub(crate) near: Option<Spanned<Option<Duration>>>,
    /// How long past its TTL an entry is served while one caller refreshes it.
    pub(crate) stale: Option<Spanned<Duration>>,
    /// `refresh = "early"`: hits refresh their entry early, by the XFetch rule.
    pub(crate) refresh: Option<Spanned<()>>,
    /// Early refresh's β.
    pub(crate) beta: Option<Spanned<f64>>,
    /// How long past its TTL an entry is kept to answer for a failed load.
    pub(crate) fail_safe: Option<Spanned<Duration>>,
    /// How long a key is answered by its entry without loading after a `fail_safe` answer.
    pub(crate) back_off: Option<Spanned<Duration>>,
    pub(crate) codec: Option<Spanned<CodecSpec>>,
    /// `compress_above = "16KiB"` (`None` inside: `"never"`).
    pub(crate) compress_above: Option<Spanned<Option<usize>>>,
    pub(crate) cache: Option<Expr>,
    /// A predicate on the value: store it only when it holds.
    pub(crate) cache_if: Option<Expr>,
    /// `helpers = false`: generate no helpers (a method of a trait impl, where they would not
    /// be members of the trait).
    pub(crate) helpers: Option<Spanned<bool>>,
    /// `background = false` (or `true`): where a `stale` or early refresh runs, instead of
    /// what the signature says.
    pub(crate) background: Option<Spanned<bool>>,
    /// `batch`: the function reads many ids, its key names one of them.
    pub(crate) batch: Option<Span>,
    /// Arguments that do not change the result, left out of the key on purpose.
    pub(crate) skip: Vec<Spanned<String>>,
    /// Arguments seen, to reject repeats.
    seen: Vec<String>,
    /// Whether `key` was given but invalid (so no key is derived in its place).
    pub(crate) key_invalid: bool,
}

impl Args {
    /// Whether the argument was written, valid or not.
    pub(crate) fn given(&self, name: &str) -> bool {
        self.seen.iter().any(|s| s == name)
    }
}

/// What to write instead of one of the `cached` crate's attribute arguments (4.x names), for a
/// function ported from it.
fn from_cached(name: &str) -> Option<&'static str> {
    Some(match name {
        "ttl_secs" | "time" => "write `ttl = \"60s\"` (units ms, s, m, h, d)",
        "convert" => {
            "write the key as a template, `key = \"user:<id>\"`; a computed part is a method \
             call in it, `<email.to_lowercase()>`"
        }
        "cache_prefix_block" => {
            "the prefix is the template's own text (`key = \"users:<id>\"`) and the cache's \
             namespace (`Cache::builder(url).namespace(\"myapp\")`)"
        }
        "map_error" => "leave it out: a cache error never reaches the caller; the loader answers",
        "redis" | "ty" | "create" => {
            "leave it out: the cache is Redis, set once with `cached_redis::set_global(...)` or \
             per function with `cache = EXPR`"
        }
        "result" | "option" => {
            "leave it out: `Result`'s `Ok` and `Option`'s `Some` are cached by type; \
             `none_ttl = \"5s\"` caches a `None`"
        }
        "sync_writes" => "leave it out: one load per cold key is the default, across processes",
        "in_impl" => "leave it out: a method works as it is",
        "size" => {
            "leave it out: Redis's `maxmemory` bounds what is kept (an in-memory cache, \
             `Cache::in_memory(entries)`, takes its bound there)"
        }
        "name" => "leave it out: `invalidate_<fn>` and the other helpers are generated",
        _ => return None,
    })
}

/// Parses the arguments. Broken syntax is an `Err`; bad values are recorded in `errors`.
pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> syn::Result<Args> {
    let mut args = Args::default();
    let parser = syn::meta::parser(|meta| args.parse_one(meta, errors));
    syn::parse::Parser::parse2(parser, tokens)?;
    Ok(args)
}

impl Args {
    fn parse_one(&mut self, meta: ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<()> {
        let Some(name) = meta.path.get_ident().map(ToString::to_string) else {
            return Err(meta.error(format!("unknown argument; expected one of {KNOWN}")));
        };
        let span = meta
            .path
            .get_ident()
            .map_or_else(Span::call_site, |i| i.span());
        if self.seen.contains(&name) {
            // Still consume the value so parsing can go on.
            if name != "batch" {
                let _: Expr = meta.value()?.parse()?;
            }
            errors.at(span, format!("`{name}` is given more than once"));
            return Ok(());
        }
        self.seen.push(name.clone());
        self.read_value(&name, span, &meta, errors)?;
        Ok(())
    }
}

impl Args {
    /// Reads the value of the argument `name` (first written at `span`).
    fn read_value(
        &mut self,
        name: &str,
        span: Span,
        meta: &ParseNestedMeta<'_>,
        errors: &mut Errors,
    ) -> syn::Result<()> {
        match name {
            "key" => self.read_key(meta.value()?.parse()?, errors),
            "ttl" => {
                let value: Expr = meta.value()?.parse()?;
                match &value {
                    Expr::Lit(_) => self.ttl = duration_of(&value, "ttl", errors),
                    _ => self.ttl_expr = Some(value),
                }
            }
            "lock_ttl" => self.lock_ttl = duration(meta, "lock_ttl", errors)?,
            "max_load" => self.max_load = duration(meta, "max_load", errors)?,
            "none_ttl" => self.none_ttl = duration(meta, "none_ttl", errors)?,
            "near" => self.near = near(meta, errors)?,
            "stale" => self.stale = duration(meta, "stale", errors)?,
            "refresh" => self.refresh = parsed(meta, "refresh", "early", parse_refresh, errors)?,
            "beta" => self.beta = beta(meta, errors)?,
            "fail_safe" => self.fail_safe = duration(meta, "fail_safe", errors)?,
            "back_off" => self.back_off = duration(meta, "back_off", errors)?,
            "jitter" => self.jitter = parsed(meta, "jitter", "10%", parse_jitter, errors)?,
            "codec" => self.codec = parsed(meta, "codec", "msgpack", parse_codec, errors)?,
            "compress_above" => {
                self.compress_above = parsed(meta, "compress_above", "16KiB", parse_size, errors)?;
            }
            "cache" => self.cache = Some(meta.value()?.parse()?),
            "cache_if" => self.cache_if = Some(meta.value()?.parse()?),
            "skip" => self.skip = skipped(&meta.value()?.parse()?),
            "helpers" => self.helpers = Some(boolean(meta)?),
            "background" => self.background = Some(boolean(meta)?),
            "batch" if meta.input.is_empty() || meta.input.peek(syn::Token![,]) => {
                self.batch = Some(span);
            }
            "batch" => {
                let _: Expr = meta.value()?.parse()?;
                errors.at(span, "`batch` takes no value: write `batch` alone");
                // Read as meant, so the key's id is not reported as an unknown argument too.
                self.batch = Some(span);
            }
            _ => {
                let _: Expr = meta.value()?.parse()?;
                let mut message = format!("unknown argument `{name}`; expected one of {KNOWN}");
                if let Some(instead) = from_cached(name) {
                    message.push_str(&format!(". `cached`'s `{name}`: {instead}"));
                }
                errors.at(span, message);
            }
        }
        Ok(())
    }

    fn read_key(&mut self, lit: LitStr, errors: &mut Errors) {
        match template::parse(&lit.value()) {
            Ok(segments) => self.key = Some((segments, lit)),
            Err(message) => {
                self.key_invalid = true;
                errors.at(lit.span(), message);
            }
        }
    }
}

/// A string literal argument read by `parse`, or `None` with the problem recorded at the
/// literal.
fn parsed<T>(
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
fn parse_refresh(text: &str) -> Result<(), String> {
    match text {
        "early" => Ok(()),
        _ => Err(format!(
            "unknown refresh `{text}`; the one refresh is \"early\" (XFetch: hits refresh an entry shortly before it expires)"
        )),
    }
}

/// `beta = 1.0`: a number in (0, 1000], or `None` with the problem recorded at it.
fn beta(meta: &ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<Option<Spanned<f64>>> {
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
fn skipped(lit: &LitStr) -> Vec<Spanned<String>> {
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
fn boolean(meta: &ParseNestedMeta<'_>) -> syn::Result<Spanned<bool>> {
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
fn duration(
    meta: &ParseNestedMeta<'_>,
    name: &str,
    errors: &mut Errors,
) -> syn::Result<Option<Spanned<Duration>>> {
    let value: Expr = meta.value()?.parse()?;
    Ok(duration_of(&value, name, errors))
}

/// `near = "5s"`, or `near = "off"`: no copies, even on a cache with `near_by_default`.
fn near(
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
fn duration_of(value: &Expr, name: &str, errors: &mut Errors) -> Option<Spanned<Duration>> {
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
fn string_literal(
    meta: &ParseNestedMeta<'_>,
    name: &str,
    example: &str,
    errors: &mut Errors,
) -> syn::Result<Option<LitStr>> {
    let value: Expr = meta.value()?.parse()?;
    Ok(literal_of(&value, name, example, errors))
}

fn literal_of(value: &Expr, name: &str, example: &str, errors: &mut Errors) -> Option<LitStr> {
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
