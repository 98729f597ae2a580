//! Not public API: what `#[redis_cached]` expansions call. Everything with behaviour lives in
//! the rest of the crate; these are thin adapters.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

pub use crate::global::global;
pub use crate::{Codec, Compression, Jitter, Key, Plain, Policy};
pub use core::time::Duration;

use crate::{Cache, CacheValue, Cacheable, Error, KeyFamily, KeyFamilyBuilder};

/// Chooses how a return type `R` is cached, by type rather than by name, so aliases such as
/// `type DbResult<T> = Result<T, DbError>` are recognised: `Returns::<R>::PROBE.mode()` is
/// [`Direct`] for `Result` and `Option` (inherent methods win over trait methods) and
/// [`Wrapped`] for anything else (through [`PlainReturn`]).
#[derive(Debug)]
pub struct Returns<R>(PhantomData<fn() -> R>);

impl<R> Returns<R> {
    /// The probe for `R`.
    pub const PROBE: Self = Returns(PhantomData);
}

impl<T, E> Returns<Result<T, E>> {
    /// `Result` implements [`Cacheable`] itself.
    pub fn mode(&self) -> Direct {
        Direct
    }
}

impl<T> Returns<Option<T>> {
    /// `Option` implements [`Cacheable`] itself.
    pub fn mode(&self) -> Direct {
        Direct
    }
}

/// The fallback for return types other than `Result` and `Option`.
pub trait PlainReturn {
    /// Plain values are cached wrapped in [`Plain`].
    fn mode(&self) -> Wrapped {
        Wrapped
    }
}

impl<R> PlainReturn for Returns<R> {}

/// The return type is cached as it is.
#[derive(Debug, Clone, Copy)]
pub struct Direct;

/// The return type is cached wrapped in [`Plain`].
#[derive(Debug, Clone, Copy)]
pub struct Wrapped;

/// How a mode turns a function's return type into a [`Cacheable`] and back. Every mode holds
/// for every type; [`fetch`] asks that `Stored` be [`Cacheable`], so a value type without serde
/// is reported as that, with nothing about modes.
pub trait Mode<R> {
    /// What the cache handles.
    type Stored;
    /// Into the cached form.
    fn wrap(result: R) -> Self::Stored;
    /// Back to the function's return type.
    fn unwrap(stored: Self::Stored) -> R;
}

impl<R> Mode<R> for Direct {
    type Stored = R;
    fn wrap(result: R) -> R {
        result
    }
    fn unwrap(stored: R) -> R {
        stored
    }
}

impl<R> Mode<R> for Wrapped {
    type Stored = Plain<R>;
    fn wrap(result: R) -> Plain<R> {
        Plain(result)
    }
    fn unwrap(stored: Plain<R>) -> R {
        stored.0
    }
}

/// A cached call: through `cache` if there is one, otherwise straight to the loader.
pub async fn fetch<M: Mode<R>, R, F: Future<Output = R>>(
    _mode: M,
    cache: Option<&Cache>,
    key: Key,
    policy: &'static Policy,
    loader: F,
) -> R
where
    M::Stored: Cacheable,
{
    match cache {
        Some(cache) => {
            let stored = cache
                .fetch(&key, policy, async { M::wrap(loader.await) })
                .await;
            M::unwrap(stored)
        }
        None => {
            warn_not_configured(policy.name());
            loader.await
        }
    }
}

/// A cached call of a function with `cache_if`: a value for which `keep` is false is returned
/// (and shared with callers that joined its load) but not stored. `keep` comes after the
/// loader, so that a closure without a type annotation is checked once the value's type is
/// known.
pub async fn fetch_if<M: Mode<R>, R, F, K>(
    _mode: M,
    cache: Option<&Cache>,
    key: Key,
    policy: &'static Policy,
    loader: F,
    keep: K,
) -> R
where
    M::Stored: Cacheable,
    K: Fn(&<M::Stored as Cacheable>::Value) -> bool,
    F: Future<Output = R>,
{
    match cache {
        Some(cache) => {
            let load = async {
                let stored = M::wrap(loader.await);
                crate::stored::cacheable::Conditional::new(stored, keep)
            };
            M::unwrap(cache.fetch(&key, policy, load).await.into_inner())
        }
        None => {
            warn_not_configured(policy.name());
            loader.await
        }
    }
}

/// The first step of a generated `refresh_*`: the entry goes, and any load in flight with it.
/// If Redis cannot be told, the call that follows finds Redis in trouble too, and its loader
/// answers. With `invalidate_replicas`, a removal the replicas did not confirm is the caller's
/// `Err(NotReplicated)`, before anything loads: a replica may still hold the old value, and a
/// refresh that answered its new one would say otherwise.
pub async fn revoke(cache: Option<&Cache>, key: &Key) -> Result<(), Error> {
    let Some(cache) = cache else {
        return Ok(());
    };
    match cache.invalidate(key).await {
        Ok(_) => Ok(()),
        Err(error @ Error::NotReplicated { .. }) => Err(error),
        Err(error) => {
            tracing::debug!(key = %key, %error, "refresh could not remove the entry first");
            Ok(())
        }
    }
}

/// A generated `invalidate_*` call.
pub async fn invalidate(cache: Option<&Cache>, key: Key) -> Result<bool, Error> {
    match cache {
        Some(cache) => cache.invalidate(&key).await,
        None => Err(Error::NotConfigured),
    }
}

/// A generated `invalidate_all_*` call.
pub async fn invalidate_family(cache: Option<&Cache>, family: KeyFamily) -> Result<u64, Error> {
    match cache {
        Some(cache) => cache.invalidate_family(&family).await,
        None => Err(Error::NotConfigured),
    }
}

/// Starts the family a generated `invalidate_all_*` removes.
pub fn family() -> KeyFamilyBuilder {
    KeyFamily::builder()
}

/// Whether an argument of type `T` is an integer, for its family part, without requiring
/// `T: KeyPart`: a type that is not one already fails where the key is rendered, and a second
/// error here would only repeat it. Called as `(&&Probe::<T>::new()).integer()` with both
/// traits in scope: method lookup takes [`ProbeKeyPart`] where it applies (autoref
/// specialization), [`ProbeOther`] otherwise.
#[derive(Debug)]
pub struct Probe<T: ?Sized>(PhantomData<T>);

impl<T: ?Sized> Probe<T> {
    /// A probe of `T`.
    pub fn new() -> Probe<T> {
        Probe(PhantomData)
    }
}

impl<T: ?Sized> Default for Probe<T> {
    fn default() -> Probe<T> {
        Probe::new()
    }
}

/// [`Probe`] of a `KeyPart`: its own answer.
pub trait ProbeKeyPart {
    /// Whether the type writes an integer.
    fn integer(&self) -> bool;
}

impl<T: crate::KeyPart + ?Sized> ProbeKeyPart for &Probe<T> {
    fn integer(&self) -> bool {
        T::INTEGER
    }
}

/// [`Probe`] of any other type: any text.
pub trait ProbeOther {
    /// Never an integer.
    fn integer(&self) -> bool;
}

impl<T: ?Sized> ProbeOther for Probe<T> {
    fn integer(&self) -> bool {
        false
    }
}

/// What a generated `update_*` hands its closure: `T`, the `Ok` value of a `Result<T, E>`
/// function or the `Some` value of an `Option<T>` one (a cached `None` has nothing to change).
/// `T` is a parameter rather than an associated type so that the helper's bound,
/// `Ret: UpdateTarget<T>`, names a type parameter: a bound on the return type alone would be
/// refused where the function is defined when the return type is plain.
#[diagnostic::on_unimplemented(
    message = "`update_*` changes the cached value of a function returning `Result<T, E>` or `Option<T>`, not `{Self}`",
    note = "for another return type, call `Cache::update(&key, |value| ...)` with the key the generated `<fn>_key` helper renders"
)]
pub trait UpdateTarget<T> {
    /// What is stored in Redis.
    type Stored: CacheValue;
    /// The part of a stored value the closure changes, if there is one.
    fn target(stored: &mut Self::Stored) -> Option<&mut T>;
}

impl<T: CacheValue, E> UpdateTarget<T> for Result<T, E> {
    type Stored = T;
    fn target(stored: &mut T) -> Option<&mut T> {
        Some(stored)
    }
}

/// `Result<Option<T>, E>` (sqlx's `fetch_optional`): the closure takes `&mut T` and runs only on
/// a cached `Ok(Some(_))`; a cached `Ok(None)` is removed, as the row may exist after the write.
/// The impl above still takes `&mut Option<T>`, so a closure's argument type chooses.
impl<T: CacheValue, E> UpdateTarget<T> for Result<Option<T>, E> {
    type Stored = Option<T>;
    fn target(stored: &mut Option<T>) -> Option<&mut T> {
        stored.as_mut()
    }
}

impl<T: CacheValue> UpdateTarget<T> for Option<T> {
    type Stored = Option<T>;
    fn target(stored: &mut Option<T>) -> Option<&mut T> {
        stored.as_mut()
    }
}

/// A generated `update_*` call.
pub async fn update<R: UpdateTarget<T>, T>(
    cache: Option<&Cache>,
    key: Key,
    policy: &Policy,
    mut change: impl FnMut(&mut T),
) -> Result<bool, Error> {
    let Some(cache) = cache else {
        return Err(Error::NotConfigured);
    };
    let apply = |stored: &mut R::Stored| R::target(stored).map(&mut change).is_some();
    cache.update_with(&key, Some(policy), apply).await
}

/// A key renderer for a template.
pub fn key() -> crate::KeyBuilder {
    Key::builder()
}

/// A key renderer for a derived key (no `key` template): [`KeyBuilder`](crate::KeyBuilder)
/// with a bound of its own on parts, so that an argument that cannot be rendered is reported
/// with the two ways out of a derived key (`skip`, or a template).
pub fn derived_key() -> DerivedKeyBuilder {
    DerivedKeyBuilder(Key::builder())
}

/// See [`derived_key`].
#[derive(Debug)]
pub struct DerivedKeyBuilder(crate::KeyBuilder);

impl DerivedKeyBuilder {
    /// [`KeyBuilder::text`](crate::KeyBuilder::text).
    pub fn text(self, text: &str) -> Self {
        DerivedKeyBuilder(self.0.text(text))
    }

    /// [`KeyBuilder::part`](crate::KeyBuilder::part), for an argument of a derived key.
    pub fn part<T: DerivedKeyPart + ?Sized>(self, value: &T) -> Self {
        DerivedKeyBuilder(self.0.part(value))
    }

    /// [`KeyBuilder::part`], for an argument whose type is generic: `KeyPart`'s own bound,
    /// which the compiler suggests adding to the type parameter (the hidden
    /// [`DerivedKeyPart`] would be a poor suggestion).
    ///
    /// [`KeyBuilder::part`]: crate::KeyBuilder::part
    pub fn generic_part<T: crate::KeyPart + ?Sized>(self, value: &T) -> Self {
        DerivedKeyBuilder(self.0.part(value))
    }

    /// [`KeyBuilder::build`](crate::KeyBuilder::build).
    pub fn build(self) -> Key {
        self.0.build()
    }
}

/// [`KeyPart`](crate::KeyPart), as an argument of a derived key asks for it: the same types,
/// reported with what a derived key allows.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used in a cache key, and without a `key` template every argument is part of the key",
    label = "this argument is part of the derived key",
    note = "if it does not change the result (a pool, a client), leave it out: write `skip = \"<its name>\"`, or write a `key = \"...\"` template, which holds only the arguments it names and needs no `skip` for this one",
    note = "to keep it in the key, implement `cached_redis::KeyPart` for its type"
)]
pub trait DerivedKeyPart: crate::KeyPart {}

#[diagnostic::do_not_recommend]
impl<T: crate::KeyPart + ?Sized> DerivedKeyPart for T {}

/// The path of the function that the closure `here` is written in, as the compiler names it
/// (`app::users::UserRepo::by_id`, `app::setting<u32>`): the start of a derived key, unique per
/// function and per instance of a generic one.
pub fn function_path<F>(here: &F) -> &'static str {
    let _ = here;
    let mut path = std::any::type_name::<F>();
    while let Some(outer) = path.strip_suffix("::{{closure}}") {
        path = outer;
    }
    path
}

/// [`function_path`] from inside a generated helper named `helper` (`invalidate_by_id`): the
/// path of the cached function `function` (`by_id`) beside it.
pub fn helper_function_path<F>(here: &F, helper: &str, function: &str) -> String {
    let path = function_path(here);
    let marker = format!("::{helper}");
    match segment_at_top_level(path, &marker) {
        Some(at) => format!("{}::{function}{}", &path[..at], &path[at + marker.len()..]),
        None => path.to_owned(),
    }
}

/// [`helper_function_path`] from inside `update_*`, whose path shows two generic arguments
/// of its own: the value's type, right after the function's `own` arguments, and the closure's
/// type, last (an `impl Trait` argument's type follows the explicit ones). Both are dropped.
pub fn update_function_path<F>(here: &F, helper: &str, function: &str, own: usize) -> String {
    let path = function_path(here);
    let marker = format!("::{helper}");
    let Some(at) = segment_at_top_level(path, &marker) else {
        return path.to_owned();
    };
    let head = &path[..at];
    let rest = &path[at + marker.len()..];
    let Some((mut args, after)) = rest.strip_prefix('<').and_then(generic_arguments) else {
        return format!("{head}::{function}{rest}");
    };
    args.pop();
    if own < args.len() {
        args.remove(own);
    }
    if args.is_empty() {
        format!("{head}::{function}{after}")
    } else {
        format!("{head}::{function}<{}>{after}", args.join(", "))
    }
}

/// Where the path segment `marker` (`::name`) is, outside any generic list (a closure's type
/// among a helper's generic arguments can name a function that starts the same), and not the
/// start of a longer name.
fn segment_at_top_level(path: &str, marker: &str) -> Option<usize> {
    let (mut depth, mut previous, mut found) = (0usize, ' ', None);
    for (i, c) in path.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' if previous == '-' => {}
            '>' | ')' | ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 && path[i..].starts_with(marker) => {
                let next = path[i + marker.len()..].chars().next();
                if next.is_none_or(|n| !(n.is_alphanumeric() || n == '_')) {
                    found = Some(i);
                }
            }
            _ => {}
        }
        previous = c;
    }
    found
}

/// The top-level arguments of a generic list (after its `<`) and what follows its `>`.
fn generic_arguments(list: &str) -> Option<(Vec<&str>, &str)> {
    let (mut depth, mut start, mut previous) = (0usize, 0, ' ');
    let mut args = Vec::new();
    for (i, c) in list.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            // `->` of a function type is no bracket.
            '>' if previous == '-' => {}
            '>' | ')' | ']' if depth > 0 => depth -= 1,
            '>' => {
                args.push(list[start..i].trim());
                return Some((args, &list[i + 1..]));
            }
            ',' if depth == 0 => {
                args.push(list[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        previous = c;
    }
    None
}

/// A return type `none_ttl` applies to: `Option<T>`, or `Result<Option<T>, E>` (through any
/// alias). The attribute names the return type at the `none_ttl` literal, so the error is
/// reported there.
#[diagnostic::on_unimplemented(
    message = "`none_ttl` applies to functions returning `Option<T>` or `Result<Option<T>, E>`, not `{Self}`",
    label = "`{Self}` has no `None` to cache",
    note = "remove `none_ttl`, or return `Option<T>` or `Result<Option<T>, E>`"
)]
pub trait NoneTtlApplies {}

impl<T> NoneTtlApplies for Option<T> {}

impl<T, E> NoneTtlApplies for Result<Option<T>, E> {}

/// Checks, at compile time, that `none_ttl` applies to `R`.
pub const fn none_ttl_applies<R: NoneTtlApplies>() {}

/// What `Self::<fn>_key` names, inside a cached method, when there is no helper of that name:
/// the method is in a trait impl, where the helpers generated beside it are not members of the
/// trait (the compiler's E0407), so they are not associated functions of the type either.
#[derive(Debug)]
pub struct InTraitImpl;

/// What `Self::<fn>_key` names, inside a cached method, when the helpers were generated: a
/// function, `Copy`. [`InTraitImpl`] is not.
#[diagnostic::on_unimplemented(
    message = "`#[redis_cached]` on a method of a trait impl needs `helpers = false`: the helpers it generates beside the method (`invalidate_<fn>`, `update_<fn>`, `refresh_<fn>`, `invalidate_all_<fn>`, `<fn>_key`) cannot be members of the trait",
    label = "write `helpers = false` in this attribute",
    note = "without helpers, invalidate with `cache.invalidate(&key)`, the key built with `Key::builder()` as the template renders it"
)]
pub trait HelpersGenerated {}

#[diagnostic::do_not_recommend]
impl<F: Copy> HelpersGenerated for F {}

/// Checks, at compile time, that the helpers of a cached method are associated functions of
/// its type (see [`HelpersGenerated`]).
pub fn helpers_generated<F: HelpersGenerated>(_: &F) {}

/// Checks, at compile time, that this build compresses (the `zstd` feature): the attribute
/// expands `compress_above` to a call spanned at its literal, which is where the error points.
#[cfg(feature = "zstd")]
#[doc(hidden)]
#[macro_export]
macro_rules! __zstd_enabled {
    () => {};
}

#[cfg(not(feature = "zstd"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __zstd_enabled {
    () => {
        ::core::compile_error!(
            "`compress_above` needs cached-redis's `zstd` feature: `cached-redis = { version = \"...\", features = [\"zstd\"] }` in Cargo.toml"
        );
    };
}

pub use crate::__zstd_enabled as zstd_enabled;

/// The policy of a cached function, from values the attribute checked at compile time.
pub const fn policy(
    name: &'static str,
    ttl: Duration,
    jitter: Jitter,
    lock_ttl: Option<Duration>,
    none_ttl: Option<Duration>,
    max_load: Option<Duration>,
    format: (Option<Codec>, Option<Compression>),
) -> Policy {
    Policy {
        name,
        ttl,
        jitter,
        lock_ttl,
        none_ttl,
        max_load,
        codec: format.0,
        compression: format.1,
    }
}

/// The policy of a function with `ttl = EXPR`: `policy` with the TTL computed at its first call,
/// checked as [`Policy::new`] and [`Policy::with_jitter`] check theirs.
pub fn policy_at_run_time(policy: Policy, ttl: Duration) -> Result<Policy, Error> {
    let checked = Policy::new(policy.name, ttl)?.with_jitter(policy.jitter)?;
    Ok(Policy {
        ttl: checked.ttl,
        ..policy
    })
}

/// The policy built at the first call, or `None` with its error logged (once): the loader then
/// answers every call, uncached.
pub fn checked_policy(policy: &'static Result<Policy, Error>) -> Option<&'static Policy> {
    match policy {
        Ok(policy) => Some(policy),
        Err(error) => {
            static LOGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
            let text = error.to_string();
            let mut logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
            if !logged.contains(&text) {
                tracing::error!(%error, "a cached function's `ttl` is invalid: running it uncached");
                logged.push(text);
            }
            None
        }
    }
}

/// How many loads and updates are in flight and how many channels are waited on, in this
/// process: for tests that check a cache leaves nothing behind.
pub fn in_flight(cache: &crate::Cache) -> (usize, usize) {
    let running = cache.inner.flights.len() + cache.inner.updates.len();
    (running, cache.inner.wakeups.channels())
}

/// Says once per process that a cached function runs uncached for want of a cache: through
/// `tracing` when a subscriber listens, on standard error otherwise, where a program that set
/// up no logging still shows it.
fn warn_not_configured(function: &'static str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if WARNED.swap(true, Ordering::Relaxed) {
        return;
    }
    let why = "no cache configured (call cached_redis::set_global at start-up or pass `cache = ...`): running uncached";
    if tracing::dispatcher::has_been_set() {
        tracing::warn!(function, "{why}");
    } else {
        eprintln!("cached-redis: `{function}`: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::generic_arguments;

    #[test]
    fn a_helper_is_found_by_its_own_segment_only() {
        use super::segment_at_top_level;
        let path = "app::update_get<app::P, app::update_get_sets::{{closure}}>";
        assert_eq!(segment_at_top_level(path, "::update_get"), Some(3));
        assert_eq!(
            segment_at_top_level("app::update_get_x", "::update_get"),
            None
        );
        assert_eq!(
            segment_at_top_level("a::b<fn() -> u8>::update_get", "::update_get"),
            Some(16)
        );
    }

    #[test]
    fn generic_lists_split_at_their_top_level() {
        let (args, after) =
            generic_arguments("u8, fn(u8) -> u8, Vec<(u8, [u8; 2])>, x::{{closure}}>::y").unwrap();
        assert_eq!(
            args,
            ["u8", "fn(u8) -> u8", "Vec<(u8, [u8; 2])>", "x::{{closure}}"]
        );
        assert_eq!(after, "::y");
        assert!(generic_arguments("u8, v").is_none());
    }
}
