//! Code generation. The expansion decides nothing at run time: it renders the key, names the
//! cache and hands the body to `::cached_redis::__private`.

mod trait_impl;

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens as _, format_ident, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{Ident, ItemFn};

use crate::args;
use crate::duration::JitterSpec;
use crate::errors::Errors;
use crate::format::CodecSpec;
use crate::model::{self, Model, Param, Part};
use crate::tokens::{mentions, names_generics, unraw};

/// The attribute's entry. On an error in the attribute, the original item, every error, and
/// the generated helpers with stub bodies, so that their callers add no errors of their own.
pub(crate) fn redis_cached(args: TokenStream, item: TokenStream) -> TokenStream {
    let LazyFn {
        item: item_fn,
        body,
    } = match syn::parse2(item.clone()) {
        Ok(lazy) => lazy,
        Err(not_a_fn) => {
            let error = syn::Error::new(
                not_a_fn.span(),
                "#[redis_cached] goes on an `async fn` (a free function or a method)",
            );
            return with_error(item, error);
        }
    };
    let mut errors = Errors::default();
    let args = match args::parse(args, &mut errors) {
        Ok(args) => args,
        Err(error) => {
            errors.push(error);
            return with_error(item, errors.finish(()).unwrap_err());
        }
    };
    let model = model::build(item_fn, args, &mut errors);
    match errors.finish(()) {
        Ok(()) => expand(&model, &body),
        Err(error) => {
            let stubs = helpers(&model, &Bodies::Stub);
            let refresh = refresh_stub(&model);
            let with_error = with_error(item, error);
            quote!(#with_error #stubs #refresh)
        }
    }
}

/// An `fn` whose body is kept as tokens, not parsed: a syntax error in the body is then
/// reported by the compiler where it is, not as "not a function" at the attribute.
struct LazyFn {
    /// The function with an empty block.
    item: ItemFn,
    /// The body's braces and what they hold.
    body: TokenStream,
}

impl syn::parse::Parse for LazyFn {
    fn parse(input: syn::parse::ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(syn::Attribute::parse_outer)?;
        let vis: syn::Visibility = input.parse()?;
        let sig: syn::Signature = input.parse()?;
        let mut body: TokenTree = input.parse()?;
        // A body passed through `macro_rules!` (`$body:block`) arrives wrapped in an invisible
        // group: look through it.
        while let TokenTree::Group(group) = &body
            && group.delimiter() == proc_macro2::Delimiter::None
            && let Some(inner) = single_tree(group.stream())
        {
            body = inner;
        }
        let TokenTree::Group(body) = body else {
            return Err(syn::Error::new(body.span(), "expected the function's body"));
        };
        if body.delimiter() != proc_macro2::Delimiter::Brace {
            return Err(syn::Error::new(body.span(), "expected the function's body"));
        }
        let item = syn::parse2(quote!(#(#attrs)* #vis #sig {}))?;
        Ok(LazyFn {
            item,
            body: quote!(#body),
        })
    }
}

/// The one token tree `stream` holds, if it holds exactly one.
fn single_tree(stream: TokenStream) -> Option<TokenTree> {
    let mut trees = stream.into_iter();
    let first = trees.next()?;
    trees.next().is_none().then_some(first)
}

fn with_error(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.into_compile_error();
    quote!(#item #error)
}

fn expand(model: &Model, body: &TokenStream) -> TokenStream {
    let cached = cached_fn(model, body, None);
    let helpers = helpers(model, &Bodies::Real);
    let refresh = model.helpers.then(|| {
        let helper = format_ident!("refresh_{}", unraw(&model.item.sig.ident));
        cached_fn(model, body, Some(&helper))
    });
    quote!(#cached #helpers #refresh)
}

/// What the generated helpers do: their work, or nothing (after an error in the attribute).
enum Bodies {
    Real,
    Stub,
}

/// `invalidate_<fn>`, `update_<fn>` and `<fn>_key`.
fn helpers(model: &Model, bodies: &Bodies) -> TokenStream {
    if !model.helpers {
        return TokenStream::new();
    }
    let invalidate = invalidate_fn(model, bodies);
    let update = update_fn(model, bodies);
    let key = key_fn(model, bodies);
    let all = invalidate_all_fn(model, bodies);
    quote!(#invalidate #update #key #all)
}

/// A name the user's body cannot see.
fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// The cached function itself, or (`refresh`) its `refresh_<fn>` twin, which removes the entry
/// first and so always loads (a second copy of the body: the twin cannot call the function by
/// name without knowing whether it is an associated function).
fn cached_fn(model: &Model, block: &TokenStream, refresh: Option<&Ident>) -> TokenStream {
    let ItemFn {
        attrs, vis, sig, ..
    } = &model.item;
    let policy = policy(model);
    let key = local("__cached_redis_key");
    let render = render_key(model, refresh, false);
    let (cache_binding, cache) = cache_binding(model, model.clone_cache);
    let checks = type_checks(model);
    let (policy_static, loader, policy_ref) = policy_setup(model, &policy, block);
    let call = fetch_call(model, quote!(#cache, #key, #policy_ref, #loader));
    let Some(helper) = refresh else {
        let in_trait_impl = trait_impl::helpers_generated_check(model);
        return quote! {
            #(#attrs)*
            #vis #sig {
                use ::cached_redis::__private::PlainReturn as _;
                #checks
                #in_trait_impl
                let #key = #render;
                #cache_binding
                #policy_static
                #call
            }
        };
    };
    let attrs = refresh_attrs(model);
    let sig = refresh_sig(model, helper);
    // The load in a block of its own: a `ttl = EXPR` that fails returns the loader's value
    // from it, which the helper then wraps in `Ok`.
    quote! {
        #attrs
        #vis #sig {
            use ::cached_redis::__private::PlainReturn as _;
            #checks
            let #key = #render;
            #cache_binding
            ::cached_redis::__private::revoke(#cache, &#key).await?;
            ::core::result::Result::Ok(async {
                #policy_static
                #call
            }.await)
        }
    }
}

/// `fetch(mode, <args>)` (`fetch_if` with `cache_if`), spanned at the return type, whose
/// bounds it checks.
fn fetch_call(model: &Model, args: TokenStream) -> TokenStream {
    let ret = &model.ret;
    let ret_span = ret.span();
    let mode = quote_spanned!(ret_span=>
        ::cached_redis::__private::Returns::<#ret>::PROBE.mode());
    let fetch = quote_spanned!(ret_span=> ::cached_redis::__private::fetch);
    match &model.cache_if {
        None => quote_spanned! {ret_span=>
            #fetch(#mode, #args).await
        },
        // The predicate is spanned where it is written: a wrong argument type is reported there.
        Some(predicate) => {
            let fetch_if = quote_spanned!(predicate.span()=> ::cached_redis::__private::fetch_if);
            quote_spanned! {ret_span=>
                #fetch_if(#mode, #args, #predicate).await
            }
        }
    }
}

/// `refresh_<fn>`'s attributes: the function's `cfg`s and a doc of its own.
fn refresh_attrs(model: &Model) -> TokenStream {
    let cfgs = model.item.attrs.iter().filter(|a| a.path().is_ident("cfg"));
    let name = &model.item.sig.ident;
    let doc = format!(
        " Runs `{name}` now and stores its result: removes the entry cached for these \
         arguments (revoking a load in flight), then loads it as a miss does, under the \
         lease. For prewarming, and after a write whose new value should be cached \
         before the next read. `Err` only with `invalidate_replicas`, when the replicas did \
         not confirm the removal (`Error::NotReplicated`): nothing was loaded, and a \
         replica may still hold the old value; retry."
    );
    quote!(#(#cfgs)* #[doc = #doc] #[allow(dead_code)])
}

/// `refresh_<fn>`'s signature: the function's, renamed, returning
/// `Result<<its return type>, cached_redis::Error>`.
fn refresh_sig(model: &Model, helper: &Ident) -> syn::Signature {
    let mut sig = model.item.sig.clone();
    sig.ident = helper.clone();
    // The checked return type: `()` where the written one was the error (`impl Trait`).
    let ret = &model.ret;
    sig.output = syn::parse_quote!(-> ::core::result::Result<#ret, ::cached_redis::Error>);
    sig
}

/// Checks the compiler makes for the attribute, each spanned at the argument it is about:
/// `none_ttl` on a return type that holds a `None`, `compress_above` in a build that
/// compresses.
fn type_checks(model: &Model) -> TokenStream {
    let none_ttl_applies = model.none_ttl_span.map(|span| {
        // The return type, shown at the literal: the error is about `none_ttl`.
        let ret = located_at(model.ret.to_token_stream(), span);
        quote_spanned!(span=> ::cached_redis::__private::none_ttl_applies::<#ret>();)
    });
    let zstd_enabled = match model.compress_above {
        Some((Some(_), span)) => {
            Some(quote_spanned!(span=> ::cached_redis::__private::zstd_enabled!();))
        }
        _ => None,
    };
    quote!(#none_ttl_applies #zstd_enabled)
}

/// `tokens`, reported at `span` but resolved where they were written (hygiene kept).
fn located_at(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tree| {
            if let TokenTree::Group(group) = &tree {
                let mut moved = Group::new(group.delimiter(), located_at(group.stream(), span));
                moved.set_span(group.span().located_at(span));
                return TokenTree::Group(moved);
            }
            tree.set_span(tree.span().located_at(span));
            tree
        })
        .collect()
}

fn invalidate_fn(model: &Model, bodies: &Bodies) -> TokenStream {
    let name = &model.item.sig.ident;
    let helper = format_ident!("invalidate_{}", unraw(name));
    let doc = format!(
        " Removes the entry `{name}` cached for these arguments and revokes any load of it in flight. \
         Call it after every write to the data behind it. Returns whether an entry was removed; \
         an `Err` means Redis could not be reached, and the entry may live until its TTL."
    );
    let body = match bodies {
        Bodies::Stub => stub(),
        Bodies::Real => keyed_body(
            model,
            &helper,
            false,
            |cache, key| quote!(::cached_redis::__private::invalidate(#cache, #key).await),
        ),
    };
    let ret = quote!(::core::result::Result<bool, ::cached_redis::Error>);
    helper_fn(model, &helper, &doc, Shape::Async(None), ret, body)
}

/// `invalidate_all_<fn>(<the cache expression's arguments>)`: removes every entry the
/// function's template renders, whatever the arguments.
fn invalidate_all_fn(model: &Model, bodies: &Bodies) -> TokenStream {
    // A cache chosen by the key (`cache = &shards[id % 4]`) holds only part of the family:
    // there is no one cache to clear.
    if model.cache_chosen_by_key {
        return TokenStream::new();
    }
    let name = &model.item.sig.ident;
    let helper = format_ident!("invalidate_all_{}", unraw(name));
    let doc = format!(
        " Removes every entry `{name}` cached, for any arguments, and revokes the loads of them \
         in flight: the keys its template renders, not other templates' that share its start \
         (`Cache::invalidate_family`). Returns how many Redis keys (entries and leases) were \
         removed; an `Err` means Redis could not be reached or, on a cluster, a slot moved \
         during the scan, and entries may live until their TTL."
    );
    let body = match bodies {
        Bodies::Stub => stub(),
        Bodies::Real => {
            let family = local("__cached_redis_family");
            let render = render_family(model, &helper);
            let (cache_binding, cache) = cache_binding(model, false);
            quote! {
                let #family = #render;
                #cache_binding
                ::cached_redis::__private::invalidate_family(#cache, #family).await
            }
        }
    };
    let ret = quote!(::core::result::Result<u64, ::cached_redis::Error>);
    helper_fn(model, &helper, &doc, Shape::Family, ret, body)
}

/// The key family chain: the template's text, and `.part()` for each placeholder.
fn render_family(model: &Model, helper: &Ident) -> TokenStream {
    let path = model.derived.then(|| {
        let here = quote!(&|| {});
        let helper = helper.to_string();
        let name = unraw(&model.item.sig.ident);
        quote!(.text(&::cached_redis::__private::helper_function_path(#here, #helper, #name)))
    });
    let parts = model.key.iter().map(|part| match part {
        Part::Text(text) => quote!(.text(#text)),
        Part::Value {
            root: Some(root),
            fields,
            display: false,
        } if fields.is_empty() => match nameable_type_of(model, root) {
            Some(ty) => quote!(.push_part({
                use ::cached_redis::__private::{ProbeKeyPart as _, ProbeOther as _};
                (&&::cached_redis::__private::Probe::<#ty>::new()).integer()
            })),
            None => quote!(.part()),
        },
        Part::Value { .. } => quote!(.part()),
        // The type argument is named at the call (`invalidate_all_f::<u32>()`).
        Part::TypeName(ty) => quote!(.fixed(::core::any::type_name::<#ty>())),
    });
    quote!(::cached_redis::__private::family() #path #(#parts)* .build())
}

/// The type of the argument `name`, references removed, if `invalidate_all_<fn>` can name it
/// in its body: no `impl Trait`, lifetime, `Self` or generic parameter of the function in it.
/// The family then matches only what that type writes (an integer's digits).
fn nameable_type_of(model: &Model, name: &Ident) -> Option<syn::Type> {
    let mut ty = model.item.sig.inputs.iter().find_map(|input| match input {
        syn::FnArg::Typed(typed) => match &*typed.pat {
            syn::Pat::Ident(pat) if pat.ident == *name => Some((*typed.ty).clone()),
            _ => None,
        },
        syn::FnArg::Receiver(_) => None,
    })?;
    while let syn::Type::Reference(reference) = ty {
        ty = *reference.elem;
    }
    let generics: Vec<String> = model
        .item
        .sig
        .generics
        .params
        .iter()
        .filter_map(|p| match p {
            syn::GenericParam::Type(t) => Some(t.ident.to_string()),
            syn::GenericParam::Const(c) => Some(c.ident.to_string()),
            syn::GenericParam::Lifetime(_) => None,
        })
        .collect();
    nameable(quote!(#ty), &generics).then_some(ty)
}

/// Whether `tokens`, groups included, name no `impl`, `Self`, lifetime or one of `generics`.
fn nameable(tokens: TokenStream, generics: &[String]) -> bool {
    tokens.into_iter().all(|token| match token {
        proc_macro2::TokenTree::Ident(ident) => {
            ident != "impl" && ident != "Self" && !generics.contains(&ident.to_string())
        }
        proc_macro2::TokenTree::Punct(punct) => punct.as_char() != '\'',
        proc_macro2::TokenTree::Group(group) => nameable(group.stream(), generics),
        proc_macro2::TokenTree::Literal(_) => true,
    })
}

/// `update_<fn>(<arguments>, change)`: changes the cached value in place. The closure's
/// argument is a type parameter that the return type's one `UpdateTarget` impl fixes at the
/// call (the `Ok` value of a `Result`, through any alias), so a return type without one is an
/// error where `update_*` is called, not where the function is defined.
fn update_fn(model: &Model, bodies: &Bodies) -> TokenStream {
    let name = &model.item.sig.ident;
    let helper = format_ident!("update_{}", unraw(name));
    let doc = format!(
        " Changes the value `{name}` cached for these arguments in place (its `Ok` or `Some` \
         value; for `Result<Option<T>, E>`, `|row: &mut T|` runs on a cached `Ok(Some(_))` and \
         `|cached: &mut Option<T>|` on either): `change` runs on it, again if another process's update came in between, and \
         the result is written back only if the entry still holds what was read, keeping its \
         TTL. It never creates an entry. Returns `Ok(true)` if the cached value changed; \
         `Ok(false)` if nothing was cached, a newer load replaced the entry, or the entry was \
         removed instead (it holds what this build's type cannot, such as a field a newer \
         build added; nothing that misses the change is left either way); an `Err` means Redis could not be reached, \
         and the entry may miss the change until its TTL."
    );
    let change = local("change");
    let value = Ident::new("__CachedRedisValue", Span::call_site());
    let ret = &model.ret;
    // The function's policy, for the codec and compression its values are written in.
    let policy = policy(model);
    let body = match bodies {
        Bodies::Stub => stub(),
        Bodies::Real => keyed_body(
            model,
            &helper,
            true,
            |cache, key| quote!(::cached_redis::__private::update::<#ret, #value>(#cache, #key, &#policy, #change).await),
        ),
    };
    let extra = Extra {
        param: value.clone(),
        bound: quote!(#ret: ::cached_redis::__private::UpdateTarget<#value>),
        arg: quote!(#change: impl ::core::ops::FnMut(&mut #value)),
    };
    let ret = quote!(::core::result::Result<bool, ::cached_redis::Error>);
    helper_fn(model, &helper, &doc, Shape::Async(Some(&extra)), ret, body)
}

/// An async helper's body: the key rendered (inside `update_*`: `within_update`), the cache
/// bound, then `call(cache, key)`.
fn keyed_body(
    model: &Model,
    helper: &Ident,
    within_update: bool,
    call: impl FnOnce(&TokenStream, &Ident) -> TokenStream,
) -> TokenStream {
    let key = local("__cached_redis_key");
    let render = render_key(model, Some(helper), within_update);
    let (cache_binding, cache) = cache_binding(model, false);
    let call = call(&cache, &key);
    quote! {
        let #key = #render;
        #cache_binding
        #call
    }
}

/// `<fn>_key(<the key's arguments>)`: the key the function caches under for them, so code
/// that needs it (a `ttl` check, a page listing entries) never spells the template again.
fn key_fn(model: &Model, bodies: &Bodies) -> TokenStream {
    let name = &model.item.sig.ident;
    let helper = format_ident!("{}_key", unraw(name));
    let doc = format!(
        " The key `{name}` caches its result under for these arguments (to pass to \
         `Cache::ttl` or `Cache::redis_key`, say)."
    );
    let body = match bodies {
        Bodies::Stub => stub(),
        Bodies::Real => render_key(model, Some(&helper), false),
    };
    helper_fn(
        model,
        &helper,
        &doc,
        Shape::Plain,
        quote!(::cached_redis::Key),
        body,
    )
}

/// How many generic arguments the cached function's path shows: its type and const
/// parameters (lifetimes are erased).
fn own_generic_count(model: &Model) -> usize {
    let params = &model.item.sig.generics.params;
    params
        .iter()
        .filter(|p| !matches!(p, syn::GenericParam::Lifetime(_)))
        .count()
}

/// How a generated helper is declared.
enum Shape<'a> {
    /// An `async fn` over the arguments the key and the cache expression use, and `Extra`'s.
    Async(Option<&'a Extra>),
    /// A plain `fn` over the key's arguments only.
    Plain,
    /// An `async fn` over the cache expression's arguments only.
    Family,
}

/// A type parameter, its bound and an argument of its own, for one helper.
struct Extra {
    param: Ident,
    bound: TokenStream,
    arg: TokenStream,
}

/// A generated helper beside the cached function: its `cfg`s, generics and visibility, `&self`
/// first for a method, then its arguments (see [`Shape`]).
fn helper_fn(
    model: &Model,
    helper: &Ident,
    doc: &str,
    shape: Shape<'_>,
    ret: TokenStream,
    body: TokenStream,
) -> TokenStream {
    let ItemFn { attrs, vis, .. } = &model.item;
    let cfgs = attrs.iter().filter(|a| a.path().is_ident("cfg"));
    let (asyncness, params, extra) = match shape {
        Shape::Async(extra) => (Some(quote!(async)), &model.helper_params, extra),
        Shape::Plain => (None, &model.key_params, None),
        Shape::Family => (Some(quote!(async)), &model.cache_params, None),
    };
    let mut generics = helper_generics(model, params, extra.is_some());
    if let Some(extra) = extra {
        let param = &extra.param;
        let bound = &extra.bound;
        generics.params.push(syn::parse_quote!(#param));
        generics
            .make_where_clause()
            .predicates
            .push(syn::parse_quote!(#bound));
    }
    let where_clause = &generics.where_clause;
    let receiver = model.has_receiver.then(|| quote!(&self,));
    let params = params.iter().map(|p| {
        let (ident, ty) = (&p.ident, &p.ty);
        quote!(#ident: #ty)
    });
    let extra_arg = extra.map(|extra| &extra.arg);
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #[allow(dead_code)]
        #vis #asyncness fn #helper #generics (#receiver #(#params,)* #extra_arg) -> #ret #where_clause {
            #body
        }
    }
}

/// `refresh_<fn>` with a stub body, beside an attribute with an error.
fn refresh_stub(model: &Model) -> TokenStream {
    if !model.helpers {
        return TokenStream::new();
    }
    let helper = format_ident!("refresh_{}", unraw(&model.item.sig.ident));
    let sig = refresh_sig(model, &helper);
    let vis = &model.item.vis;
    let body = stub();
    quote!(#[allow(dead_code)] #vis #sig { #body })
}

/// The cached function's generics, less the type and const parameters a helper with an
/// explicit key has no use for (a handle's `D` in `get<D: Db>(db: &D, id: u64)` with
/// `key = "user:<id>"`): left in, they could not be inferred where the helper is called. With
/// a derived key every parameter stays, since the key's path names them all.
fn helper_generics(model: &Model, params: &[Param], uses_ret: bool) -> syn::Generics {
    let mut generics = model.item.sig.generics.clone();
    if model.derived {
        return generics;
    }
    let mut used = TokenStream::new();
    for p in params {
        p.ty.to_tokens(&mut used);
    }
    if uses_ret {
        model.ret.to_tokens(&mut used);
    }
    model.cache.to_tokens(&mut used);
    for part in &model.key {
        if let Part::TypeName(t) = part {
            t.to_tokens(&mut used);
        }
    }
    let name = |p: &syn::GenericParam| match p {
        syn::GenericParam::Type(t) => Some(t.ident.clone()),
        syn::GenericParam::Const(c) => Some(c.ident.clone()),
        syn::GenericParam::Lifetime(_) => None,
    };
    let dropped: Vec<Ident> = generics
        .params
        .iter()
        .filter_map(name)
        .filter(|n| !mentions(&used, n))
        .collect();
    let mentions_dropped = |tokens: TokenStream| dropped.iter().any(|d| mentions(&tokens, d));
    generics.params = generics
        .params
        .into_iter()
        .filter(|p| name(p).is_none_or(|n| !dropped.contains(&n)))
        .map(|mut p| {
            if let syn::GenericParam::Type(t) = &mut p {
                t.bounds = std::mem::take(&mut t.bounds)
                    .into_iter()
                    .filter(|b| !mentions_dropped(b.to_token_stream()))
                    .collect();
            }
            p
        })
        .collect();
    if let Some(where_clause) = &mut generics.where_clause {
        where_clause.predicates = std::mem::take(&mut where_clause.predicates)
            .into_iter()
            .filter(|w| !mentions_dropped(w.to_token_stream()))
            .collect();
    }
    generics
}

/// The body of a helper generated beside an attribute with an error: it is never run, as
/// the crate does not compile.
fn stub() -> TokenStream {
    quote!(#![allow(unused_variables)] ::core::unimplemented!())
}

/// The policy's static, the loader and the policy to pass. With `ttl = EXPR` the policy is
/// built at the first call (the expression evaluated once, checked at run time); if it is
/// invalid, the error is logged and the loader answers, uncached.
fn policy_setup(
    model: &Model,
    policy: &TokenStream,
    block: &TokenStream,
) -> (TokenStream, TokenStream, TokenStream) {
    let Some(expr) = &model.ttl_expr else {
        let setup =
            quote!(static __CACHED_REDIS_POLICY: ::cached_redis::__private::Policy = #policy;);
        return (
            setup,
            quote!(async move #block),
            quote!(&__CACHED_REDIS_POLICY),
        );
    };
    let (loader, checked) = (
        local("__cached_redis_loader"),
        local("__cached_redis_policy"),
    );
    let ttl = quote_spanned!(expr.span()=> {
        let ttl: ::core::time::Duration = #expr;
        ttl
    });
    let setup = quote! {
        static __CACHED_REDIS_POLICY: ::std::sync::LazyLock<
            ::core::result::Result<::cached_redis::__private::Policy, ::cached_redis::Error>,
        > = ::std::sync::LazyLock::new(|| ::cached_redis::__private::policy_at_run_time(#policy, #ttl));
        let #loader = async move #block;
        let #checked = match ::cached_redis::__private::checked_policy(&__CACHED_REDIS_POLICY) {
            ::core::option::Option::Some(policy) => policy,
            ::core::option::Option::None => return #loader.await,
        };
    };
    (setup, quote!(#loader), quote!(#checked))
}

/// `__private::policy(...)`, from values checked at compile time.
fn policy(model: &Model) -> TokenStream {
    let name = model.item.sig.ident.to_string();
    let millis = |d: std::time::Duration| {
        let ms = d.as_millis() as u64;
        quote!(::cached_redis::__private::Duration::from_millis(#ms))
    };
    let optional = |d: Option<std::time::Duration>| match d {
        Some(d) => {
            let d = millis(d);
            quote!(::core::option::Option::Some(#d))
        }
        None => quote!(::core::option::Option::None),
    };
    let ttl = millis(model.ttl);
    let jitter = match model.jitter {
        None => quote!(::cached_redis::__private::Jitter::None),
        Some(JitterSpec::Ratio(ppm)) => quote!(::cached_redis::__private::Jitter::Ratio(#ppm)),
        Some(JitterSpec::Fixed(d)) => {
            let d = millis(d);
            quote!(::cached_redis::__private::Jitter::Fixed(#d))
        }
    };
    let lock_ttl = optional(model.lock_ttl);
    let none_ttl = optional(model.none_ttl);
    let max_load = optional(model.max_load);
    let format = format(model);
    quote!(::cached_redis::__private::policy(
        #name, #ttl, #jitter, #lock_ttl, #none_ttl, #max_load, #format
    ))
}

/// The policy's codec and compression overrides.
fn format(model: &Model) -> TokenStream {
    let private = quote!(::cached_redis::__private);
    let codec = match model.codec {
        None => quote!(::core::option::Option::None),
        Some(CodecSpec::Json) => quote!(::core::option::Option::Some(#private::Codec::Json)),
        Some(CodecSpec::MessagePack) => {
            quote!(::core::option::Option::Some(#private::Codec::MessagePack))
        }
    };
    let compression = match model.compress_above {
        None => quote!(::core::option::Option::None),
        Some((None, _)) => quote!(::core::option::Option::Some(#private::Compression::None)),
        Some((Some(above), _)) => quote!(::core::option::Option::Some(
            #private::Compression::Zstd { above: #above }
        )),
    };
    quote!((#codec, #compression))
}

/// The key builder chain. Each value is spanned at its parameter, so a type that cannot be
/// rendered is reported there. `helper` names the generated helper the chain is rendered in,
/// when it is not the cached function itself (a derived key names the cached function);
/// `within_update`: that helper is `update_*`, with generic parameters of its own.
fn render_key(model: &Model, helper: Option<&Ident>, within_update: bool) -> TokenStream {
    let path = model.derived.then(|| {
        let here = quote!(&|| {});
        match helper {
            None => quote!(.text(::cached_redis::__private::function_path(#here))),
            // `update_*` has two type parameters of its own (the value and the closure),
            // which its path shows after the function's own.
            Some(helper) if within_update => {
                let helper = helper.to_string();
                let name = unraw(&model.item.sig.ident);
                let own = own_generic_count(model);
                quote!(.text(&::cached_redis::__private::update_function_path(#here, #helper, #name, #own)))
            }
            Some(helper) => {
                let helper = helper.to_string();
                let name = unraw(&model.item.sig.ident);
                quote!(.text(&::cached_redis::__private::helper_function_path(#here, #helper, #name)))
            }
        }
    });
    let parts = model.key.iter().map(|part| match part {
        Part::Text(text) => quote!(.text(#text)),
        Part::Value {
            root,
            fields,
            display,
        } => render_value(model, root.as_ref(), fields, *display),
        Part::TypeName(ty) => quote!(.part(::core::any::type_name::<#ty>())),
    });
    // A derived key's parts have a bound of their own, whose error says `skip` or `key`.
    let start = if model.derived {
        quote!(derived_key)
    } else {
        quote!(key)
    };
    quote!(::cached_redis::__private::#start() #path #(#parts)* .build())
}

/// `.part(&root.fields)` (`.display(..)` with `display`), spanned at the argument, so a type
/// that cannot be rendered is reported there. An argument of a derived key whose type the
/// function's generics name (`id: impl Display`, `id: K`) keeps `KeyPart`'s bound, which the
/// compiler then suggests adding to them, rather than the derived key's hidden one.
fn render_value(
    model: &Model,
    root: Option<&Ident>,
    fields: &[String],
    display: bool,
) -> TokenStream {
    let span = root.map_or(model.key_span, Ident::span);
    let generic = |ident: &Ident| {
        let param = model.key_params.iter().find(|p| p.ident == *ident);
        param.is_some_and(|p| names_generics(&model.item.sig.generics, &p.ty))
    };
    let method = match root {
        _ if display => quote_spanned!(span=> display),
        Some(ident) if model.derived && generic(ident) => quote_spanned!(span=> generic_part),
        _ => quote_spanned!(span=> part),
    };
    let root = match root {
        Some(ident) => quote!(#ident),
        None => quote_spanned!(span=> self),
    };
    let fields = fields.iter().map(|f| field_access(f, model.key_span));
    quote_spanned!(span=> .#method(&#root #(#fields)*))
}

/// `.field`, `.0`, `.r#type` or `.method()` in a placeholder's path.
fn field_access(field: &str, span: Span) -> TokenStream {
    if let Ok(index) = field.parse::<u32>() {
        let index = syn::Index { index, span };
        return quote!(.#index);
    }
    let ident = |name: &str| match name.strip_prefix("r#") {
        Some(raw) => Ident::new_raw(raw, span),
        None => Ident::new(name, span),
    };
    match field.strip_suffix("()") {
        Some(method) => {
            let method = ident(method);
            quote!(.#method())
        }
        None => {
            let field = ident(field);
            quote!(.#field)
        }
    }
}

/// Binds the cache and returns the `Option<&Cache>` expression to pass on. `owned`: a clone
/// of the handle (a `&mut self` method, whose body takes `self` while the cache is in use),
/// otherwise the borrow the expression gives.
fn cache_binding(model: &Model, owned: bool) -> (TokenStream, TokenStream) {
    match &model.cache {
        Some(expr) if owned => {
            let cache = local("__cached_redis_cache");
            let binding = quote_spanned!(expr.span()=>
                let #cache: ::cached_redis::Cache = ::core::clone::Clone::clone(#expr);
            );
            (binding, quote!(::core::option::Option::Some(&#cache)))
        }
        Some(expr) => {
            let cache = local("__cached_redis_cache");
            let binding = quote_spanned!(expr.span()=>
                let #cache: &::cached_redis::Cache = #expr;
            );
            (binding, quote!(::core::option::Option::Some(#cache)))
        }
        None => {
            let global = local("__cached_redis_global");
            (
                quote!(let #global = ::cached_redis::__private::global();),
                quote!(::core::option::Option::as_ref(&#global)),
            )
        }
    }
}
