//! The checked model of one cached function: its parameters, return kind, key and policy.
//! `build` runs every check in order; each rule lives in the file named for what it reads.

mod batch;
mod cache_expr;
mod key;
mod signature;
mod unkeyed;

use std::time::Duration;

use proc_macro2::Span;
use syn::{ItemFn, Type};

use crate::args::{Args, Spanned};
use crate::duration::JitterSpec;
use crate::errors::Errors;
use crate::format::CodecSpec;
use key::Scope;

pub(crate) use batch::{Batch, Kind};
pub(crate) use key::Part;
pub(crate) use signature::Param;

pub(crate) struct Model {
    pub(crate) item: ItemFn,
    pub(crate) ret: Type,
    pub(crate) has_receiver: bool,
    /// The key's pieces and the span errors in it point at.
    pub(crate) key: Vec<Part>,
    pub(crate) key_span: Span,
    /// Without a `key`, the rendered key starts with the function's path (module, impl type,
    /// name and generic arguments, as the compiler names them), which `key` leaves out.
    pub(crate) derived: bool,
    /// Parameters the key or the `cache` expression use, in signature order: the invalidation
    /// helper's parameters.
    pub(crate) helper_params: Vec<Param>,
    /// The arguments the key uses, in order: `<fn>_key`'s parameters.
    pub(crate) key_params: Vec<Param>,
    /// The arguments the `cache` expression uses: `invalidate_all_<fn>`'s parameters.
    pub(crate) cache_params: Vec<Param>,
    /// The `cache` expression picks a cache by something in the key (`&shards[id % 4]`,
    /// `&self.shards[self.shard]` with `<self.shard>` in the key): no one cache holds the
    /// function's entries, so there is no `invalidate_all_<fn>`.
    pub(crate) cache_chosen_by_key: bool,
    pub(crate) ttl: Duration,
    /// `ttl = EXPR`: computed once, at the first call, in place of `ttl`.
    pub(crate) ttl_expr: Option<syn::Expr>,
    pub(crate) jitter: Option<JitterSpec>,
    pub(crate) lock_ttl: Option<Duration>,
    pub(crate) max_load: Option<Duration>,
    pub(crate) none_ttl: Option<Duration>,
    /// Where `none_ttl` was written: the expansion checks there, by type, that the function
    /// returns an `Option` or a `Result` of one (aliases included).
    pub(crate) none_ttl_span: Option<Span>,
    /// `near`: whether the function keeps values near.
    pub(crate) near: Near,
    /// `stale`: how long past its TTL an entry is served while it is refreshed.
    pub(crate) stale: Option<Duration>,
    /// `refresh = "early"`, with its β in millionths (1,000,000 without `beta`).
    pub(crate) early: Option<u32>,
    /// `fail_safe`, and where it was written: the expansion checks there that the function
    /// returns a `Result`.
    pub(crate) fail_safe: Option<(Duration, Span)>,
    /// `back_off`: how long a key is answered by its entry without loading after a
    /// `fail_safe` answer.
    pub(crate) back_off: Option<Duration>,
    pub(crate) codec: Option<CodecSpec>,
    /// `compress_above`, as bytes or `None` for `"never"`, and where it was written (a build
    /// without the `zstd` feature is reported there).
    pub(crate) compress_above: Option<(Option<usize>, Span)>,
    pub(crate) cache: Option<syn::Expr>,
    /// Store a value only when this predicate on it holds.
    pub(crate) cache_if: Option<syn::Expr>,
    /// Whether to generate `invalidate_*`, `update_*` and `*_key` (not in a trait impl).
    pub(crate) helpers: bool,
    /// `background`: where a refresh runs, if the attribute says (else by the signature).
    pub(crate) background: Option<bool>,
    /// The cache expression starts from something the body takes by value or mutably
    /// (`&mut self`, `self`, a parameter `state: AppState`): its borrow cannot last while the
    /// body holds it, so the handle is cloned.
    pub(crate) clone_cache: bool,
    /// `batch`: the ids' argument and the key's id; the key's parameters name the id.
    pub(crate) batch: Option<Batch>,
}

/// What the attribute says of `near`.
#[derive(Clone, Copy)]
pub(crate) enum Near {
    /// Nothing: values are kept near for the cache's `near_by_default`, where they can be.
    Unsaid,
    /// `near = "off"`: never.
    Off,
    /// `near = "5s"`, and where it was written: the expansion checks there that values are
    /// `Clone`.
    For(Duration, Span),
}

/// Checks the function against its arguments; records every problem found.
pub(crate) fn build(item: ItemFn, args: Args, errors: &mut Errors) -> Model {
    let sig = &item.sig;
    signature::check_signature_and_ttl(sig, &args, errors);
    if let (Some(beta), None) = (&args.beta, &args.refresh) {
        let message = "`beta` tunes early refresh: add `refresh = \"early\"`, or leave `beta` out";
        errors.at(beta.span, message);
    }
    if let Some(background) = &args.background {
        if args.stale.is_none() && args.refresh.is_none() {
            let message = "`background` says where a `stale` or early refresh runs: add `stale = \"5m\"` or `refresh = \"early\"`, or leave `background` out";
            errors.at(background.span, message);
        } else if background.value && args.cache_if.is_some() {
            let message =
                "a function with `cache_if` refreshes in its caller: leave `background` out";
            errors.at(background.span, message);
        }
    }
    if let (Some(back_off), None) = (&args.back_off, &args.fail_safe) {
        let message = "`back_off` is how long a key is answered by its entry after a failed load: add `fail_safe = \"1h\"`, or leave `back_off` out";
        errors.at(back_off.span, message);
    }
    let ret = signature::return_type(sig, errors);
    let mut params = signature::named_params(sig, args.key.is_none() && !args.key_invalid, errors);
    let batch = args
        .batch
        .and_then(|at| batch::batch_params(sig, &mut params, &args, at, errors));
    if args.batch.is_some() && batch.is_none() {
        // Its key would name an id that is not an argument: nothing more to report.
        let key = ResolvedKey {
            parts: Vec::new(),
            span: Span::call_site(),
            in_key: vec![false; params.len()],
        };
        return assemble(item, args, ret, params, key, None);
    }
    let handle = args.cache.as_ref().and_then(cache_expr::root_ident);
    let (segments, key_span) = key::template(&params, &args, handle.as_ref());
    let scope = Scope::new(&params, sig);
    let (key, in_key) = key::resolve(&segments, key_span, &scope, errors);
    unkeyed::check_skip_names(&scope, &args, errors);
    if args.key.is_some() {
        key::check_type_params_named(&key, &ret, &scope, key_span, errors);
        // Only once the rest is right: with a misspelt placeholder, the argument it meant
        // would be reported as left out too.
        if errors.is_empty() {
            let exempt = unkeyed::exempt_from_key(&params, &args, handle.as_ref());
            unkeyed::check_unkeyed(&scope, &in_key, &exempt, &args, errors);
        }
    }
    let key = ResolvedKey {
        parts: key,
        span: key_span,
        in_key,
    };
    assemble(item, args, ret, params, key, batch)
}

/// The key as [`key::resolve`] left it, with the span its errors point at.
struct ResolvedKey {
    parts: Vec<Part>,
    span: Span,
    /// For each parameter, whether the key uses it.
    in_key: Vec<bool>,
}

/// The model from the checked pieces: the parameters each helper takes, and the policy.
fn assemble(
    item: ItemFn,
    args: Args,
    ret: Type,
    params: Vec<Param>,
    key: ResolvedKey,
    batch: Option<Batch>,
) -> Model {
    let sig = &item.sig;
    let mut in_cache_expr = vec![false; params.len()];
    if let Some(cache) = &args.cache {
        let tokens = quote::ToTokens::to_token_stream(cache);
        signature::mark_mentioned(&tokens, &params, &mut in_cache_expr);
    }
    let in_key = &key.in_key;
    let cache_chosen_by_key = args
        .cache
        .as_ref()
        .is_some_and(|cache| cache_expr::chosen_by_key(cache, &params, in_key, &key.parts));
    let pick = |wanted: &dyn Fn(usize) -> bool| -> Vec<Param> {
        let picked = params.iter().enumerate().filter(|(i, _)| wanted(*i));
        picked.map(|(_, p)| p.clone()).collect()
    };
    Model {
        ret,
        has_receiver: sig.receiver().is_some(),
        key: key.parts,
        key_span: key.span,
        derived: args.key.is_none(),
        helper_params: pick(&|i| in_key[i] || in_cache_expr[i]),
        key_params: pick(&|i| in_key[i]),
        cache_params: pick(&|i| in_cache_expr[i]),
        cache_chosen_by_key,
        clone_cache: cache_expr::clone_cache(sig, &params, args.cache.as_ref()),
        ttl: args.ttl.map_or(Duration::from_secs(1), |t| t.value),
        ttl_expr: args.ttl_expr,
        jitter: args.jitter.map(|j| j.value),
        lock_ttl: args.lock_ttl.map(|d| d.value),
        max_load: args.max_load.map(|d| d.value),
        none_ttl_span: args.none_ttl.as_ref().map(|d| d.span),
        none_ttl: args.none_ttl.map(|d| d.value),
        near: match args.near {
            None => Near::Unsaid,
            Some(Spanned { value: None, .. }) => Near::Off,
            Some(Spanned {
                value: Some(keep),
                span,
            }) => Near::For(keep, span),
        },
        stale: args.stale.map(|d| d.value),
        fail_safe: args.fail_safe.map(|d| (d.value, d.span)),
        back_off: args.back_off.map(|d| d.value),
        early: args.refresh.as_ref().map(|_| {
            let beta = args.beta.as_ref().map_or(1.0, |b| b.value);
            ((beta * 1_000_000.0).round() as u32).max(1)
        }),
        codec: args.codec.map(|c| c.value),
        compress_above: args.compress_above.map(|c| (c.value, c.span)),
        cache: args.cache,
        cache_if: args.cache_if,
        helpers: args.helpers.is_none_or(|h| h.value),
        background: args.background.as_ref().map(|b| b.value),
        batch,
        item,
    }
}
