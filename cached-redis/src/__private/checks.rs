//! What the expansion asks of types at compile time: whether a family part is an integer
//! ([`Probe`]), and the checks that report an attribute used where it does not apply
//! (`none_ttl`, helpers in a trait impl, `compress_above` without zstd) with a message of its
//! own, at the argument that is wrong.

use std::marker::PhantomData;

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

/// A return type `fail_safe` applies to: `Result<T, E>` (through any alias). The attribute names
/// the return type at the `fail_safe` literal, so the error is reported there.
#[diagnostic::on_unimplemented(
    message = "`fail_safe` applies to functions returning `Result<T, E>`, not `{Self}`",
    label = "`{Self}` has no error for a stale entry to answer in place of",
    note = "remove `fail_safe`, or return `Result<T, E>`"
)]
pub trait FailSafeApplies {}

impl<T, E> FailSafeApplies for Result<T, E> {}

/// Checks, at compile time, that `fail_safe` applies to `R`.
pub const fn fail_safe_applies<R: FailSafeApplies>() {}

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
