//! The key renderers a generated key chain starts with: one for a template, one for a derived
//! key whose parts are checked with a message of its own.

use crate::Key;

/// A key renderer for a template.
#[inline]
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
