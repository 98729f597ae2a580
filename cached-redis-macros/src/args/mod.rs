//! The attribute's arguments: syntax is parsed here, values are checked as they are read, and
//! problems are recorded so that every bad argument is reported at once.

mod values;

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::{Expr, LitStr};

use crate::duration::{JitterSpec, parse_jitter};
use crate::errors::Errors;
use crate::format::{CodecSpec, parse_codec, parse_size};
use crate::template::{self, Segment};
use values::{beta, boolean, duration, duration_of, near, parse_refresh, parsed, skipped};

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
