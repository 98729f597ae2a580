//! The checked model of one cached function: its parameters, return kind, key and policy.
//! Every rule that spans more than one argument is checked here, in one place.

use std::time::Duration;

use proc_macro2::Span;
use syn::spanned::Spanned as _;
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Type};

use crate::args::{Args, Spanned};
use crate::duration::JitterSpec;
use crate::errors::Errors;
use crate::format::CodecSpec;
use crate::template::{Segment, show};

/// A named parameter of the function.
#[derive(Clone)]
pub(crate) struct Param {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}

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
    pub(crate) codec: Option<CodecSpec>,
    /// `compress_above`, as bytes or `None` for `"never"`, and where it was written (a build
    /// without the `zstd` feature is reported there).
    pub(crate) compress_above: Option<(Option<usize>, Span)>,
    pub(crate) cache: Option<syn::Expr>,
    /// Store a value only when this predicate on it holds.
    pub(crate) cache_if: Option<syn::Expr>,
    /// Whether to generate `invalidate_*`, `update_*` and `*_key` (not in a trait impl).
    pub(crate) helpers: bool,
    /// The cache expression starts from something the body takes by value or mutably
    /// (`&mut self`, `self`, a parameter `state: AppState`): its borrow cannot last while the
    /// body holds it, so the handle is cloned.
    pub(crate) clone_cache: bool,
}

/// Checks the function against its arguments; records every problem found.
pub(crate) fn build(item: ItemFn, args: Args, errors: &mut Errors) -> Model {
    let sig = &item.sig;
    check_signature_and_ttl(sig, &args, errors);
    let ret = return_type(sig, errors);
    let has_receiver = sig.receiver().is_some();
    let params = named_params(&item, args.key.is_none() && !args.key_invalid, errors);
    let mut in_cache_expr = vec![false; params.len()];
    if let Some(cache) = &args.cache {
        let tokens = quote::ToTokens::to_token_stream(cache);
        mark_mentioned(&tokens, &params, &mut in_cache_expr);
    }
    let (segments, key_span) = match &args.key {
        Some((segments, lit)) => (segments.clone(), lit.span()),
        None => (derived_template(&params, &args), Span::call_site()),
    };
    let scope = Scope {
        params: &params,
        has_receiver,
        type_params: sig
            .generics
            .type_params()
            .map(|t| t.ident.clone())
            .collect(),
    };
    let (key, in_key) = resolve(&segments, key_span, &scope, errors);
    check_skip_names(&scope, &args, errors);
    if args.key.is_some() {
        check_type_params_named(&key, &ret, &scope, key_span, errors);
        // Only once the rest is right: with a misspelt placeholder, the argument it meant
        // would be reported as left out too.
        if errors.is_empty() {
            check_unkeyed(
                &scope,
                &in_key,
                &exempt_from_key(&params, &args),
                &args,
                errors,
            );
        }
    }
    let cache_chosen_by_key = args
        .cache
        .as_ref()
        .is_some_and(|cache| chosen_by_key(cache, &params, &in_key, &key));
    let pick = |wanted: &dyn Fn(usize) -> bool| -> Vec<Param> {
        let picked = params.iter().enumerate().filter(|(i, _)| wanted(*i));
        picked.map(|(_, p)| p.clone()).collect()
    };
    Model {
        ret,
        has_receiver,
        key,
        key_span,
        derived: args.key.is_none(),
        helper_params: pick(&|i| in_key[i] || in_cache_expr[i]),
        key_params: pick(&|i| in_key[i]),
        cache_params: pick(&|i| in_cache_expr[i]),
        cache_chosen_by_key,
        clone_cache: clone_cache(sig, &params, args.cache.as_ref()),
        ttl: args.ttl.map_or(Duration::from_secs(1), |t| t.value),
        ttl_expr: args.ttl_expr,
        jitter: args.jitter.map(|j| j.value),
        lock_ttl: args.lock_ttl.map(|d| d.value),
        max_load: args.max_load.map(|d| d.value),
        none_ttl_span: args.none_ttl.as_ref().map(|d| d.span),
        none_ttl: args.none_ttl.map(|d| d.value),
        codec: args.codec.map(|c| c.value),
        compress_above: args.compress_above.map(|c| (c.value, c.span)),
        cache: args.cache,
        cache_if: args.cache_if,
        helpers: args.helpers.is_none_or(|h| h.value),
        item,
    }
}

/// An `async fn`, and a `ttl` (with a jitter below it).
fn check_signature_and_ttl(sig: &syn::Signature, args: &Args, errors: &mut Errors) {
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

/// The arguments an explicit template may leave out without `skip`: the one the cache is
/// reached through (`&shards[id % 4]` reaches it through `shards`; `id` still selects data),
/// and what `cache_if` captures, which does not select the entry.
fn exempt_from_key(params: &[Param], args: &Args) -> Vec<bool> {
    let handle = args.cache.as_ref().and_then(root_ident);
    let mut exempt: Vec<bool> = params
        .iter()
        .map(|p| handle.as_ref() == Some(&p.ident))
        .collect();
    if let Some(predicate) = &args.cache_if {
        let tokens = quote::ToTokens::to_token_stream(predicate);
        mark_mentioned(&tokens, params, &mut exempt);
    }
    exempt
}

/// Whether the cache handle must be cloned (see [`Model::clone_cache`]).
fn clone_cache(sig: &syn::Signature, params: &[Param], cache: Option<&syn::Expr>) -> bool {
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

/// The return type. How it is cached is decided by its type in the expansion, not here, so
/// type aliases of `Result` and `Option` work.
fn return_type(sig: &syn::Signature, errors: &mut Errors) -> Type {
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
fn named_params(item: &ItemFn, need_all: bool, errors: &mut Errors) -> Vec<Param> {
    let mut params = Vec::new();
    for input in &item.sig.inputs {
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

/// `get_user(id, region)` becomes `<path>:<id>:<region>`; the expansion writes the path of the
/// function in front (`app::users::get_user`), so same-named functions never share entries.
/// The argument the `cache` expression starts from is not data and is left out, nor are the
/// arguments `skip` names.
fn derived_template(params: &[Param], args: &Args) -> Vec<Segment> {
    // Only the argument the cache is reached through (`cache`, `&state.cache`) is a handle;
    // one that merely appears in the expression (`&shards[id % 4]`) selects data, and stays.
    let handle = args.cache.as_ref().and_then(root_ident);
    let skipped = |p: &Param| args.skip.iter().any(|s| s.value == bare(&p.ident));
    let mut segments = Vec::new();
    for param in params
        .iter()
        .filter(|p| handle.as_ref() != Some(&p.ident) && !skipped(p))
    {
        segments.push(Segment::Text(":".to_owned()));
        segments.push(Segment::Placeholder {
            root: bare(&param.ident),
            fields: Vec::new(),
            display: false,
        });
    }
    segments
}

/// What a placeholder can name.
struct Scope<'a> {
    params: &'a [Param],
    has_receiver: bool,
    type_params: Vec<Ident>,
}

/// An identifier's name without `r#` (`r#type` is placed as `<type>`).
fn bare(ident: &Ident) -> String {
    ident.to_string().trim_start_matches("r#").to_owned()
}

fn resolve(
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
        } else if let Some(i) = scope.params.iter().position(|p| bare(&p.ident) == *root) {
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
fn known_arguments(scope: &Scope<'_>) -> String {
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
fn check_type_params_named(
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

/// Whether `tokens` hold the identifier `ident` anywhere.
pub(crate) fn mentions(tokens: &proc_macro2::TokenStream, ident: &Ident) -> bool {
    tokens.clone().into_iter().any(|t| match t {
        proc_macro2::TokenTree::Ident(i) => i == *ident,
        proc_macro2::TokenTree::Group(g) => mentions(&g.stream(), ident),
        _ => false,
    })
}

/// An argument of a type that identifies data (an integer, a string, an id...) that the
/// template leaves out would let every value of it share one entry: an error, unless `skip`
/// names it. Handles (`&PgPool`, `&Cache`, a struct of one's own) stay out without ceremony.
fn check_unkeyed(
    scope: &Scope<'_>,
    in_key: &[bool],
    exempt: &[bool],
    args: &Args,
    errors: &mut Errors,
) {
    for (i, param) in scope.params.iter().enumerate() {
        let skipped = args.skip.iter().any(|s| s.value == bare(&param.ident));
        if in_key[i] || exempt[i] || skipped || !identifies_data(&param.ty) {
            continue;
        }
        let name = bare(&param.ident);
        errors.at(
            param.ident.span(),
            format!(
                "the argument `{name}` is not in the key template, so every `{name}` would share one entry: add `<{name}>` to `key`, or write `skip = \"{name}\"` if it does not change the result"
            ),
        );
    }
}

/// Every name in `skip` must be an argument.
fn check_skip_names(scope: &Scope<'_>, args: &Args, errors: &mut Errors) {
    for skip in &args.skip {
        if !scope.params.iter().any(|p| bare(&p.ident) == skip.value) {
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

/// Marks the parameters an expression mentions (the `cache` expression may use them, so the
/// invalidation helper needs them too).
/// The variable an expression such as `&state.caches[i].main` starts from (`state`).
fn root_ident(expr: &syn::Expr) -> Option<Ident> {
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

/// Whether what `cache` selects its handle by (an index, a method's or a call's arguments: all
/// but the path it starts from) mentions an argument in the key, or `self` when the key reads
/// the receiver.
fn chosen_by_key(cache: &syn::Expr, params: &[Param], in_key: &[bool], key: &[Part]) -> bool {
    let mut selectors = proc_macro2::TokenStream::new();
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
fn selectors_of(expr: &syn::Expr, out: &mut proc_macro2::TokenStream) {
    use quote::ToTokens as _;
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

fn mark_mentioned(tokens: &proc_macro2::TokenStream, params: &[Param], used: &mut [bool]) {
    for (used, param) in used.iter_mut().zip(params) {
        *used |= mentions(tokens, &param.ident);
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
