//! Whether a value serializes as `None`, or as a `Some` of a `None`: how `Result<Option<T>, E>`'s
//! `Ok(None)` is told from a value without specialization, and how a nested `Some(None)`, which
//! JSON stores as the same `null` and reads back as `None`, is kept from being stored. A
//! serializer that accepts only those two shapes and stops at anything else, at its first call
//! (it formats nothing, even for `collect_str`).

use std::fmt;

use serde::Serialize;
use serde::ser::{self, Impossible};

/// What a value serializes as, for the two shapes JSON cannot tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `None` (directly, not inside a struct or a newtype).
    None,
    /// `Some(None)`, at any depth of `Some`, or a `Some` of anything else the codecs write as
    /// `null`/`nil` (a unit, `serde_json::Value::Null`, and in JSON a NaN or infinite float):
    /// stored, it would read back as `None`.
    SomeOfNone,
    /// Anything else.
    Value,
}

/// The shape of `value`.
pub(crate) fn shape<T: Serialize + ?Sized>(value: &T) -> Shape {
    match value.serialize(Probe) {
        Ok(Probed::None) => Shape::None,
        Ok(Probed::SomeOfNone) => Shape::SomeOfNone,
        // A unit on its own reads back as itself.
        Ok(Probed::Null) | Err(NotNone) => Shape::Value,
    }
}

/// What the probe found: [`Shape`]'s two shapes, or a value written as `null` that is not a
/// `None` (which only matters inside a `Some`).
enum Probed {
    None,
    SomeOfNone,
    Null,
}

struct Probe;

#[derive(Debug)]
struct NotNone;

impl fmt::Display for NotNone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not None")
    }
}

impl std::error::Error for NotNone {}

impl ser::Error for NotNone {
    fn custom<T: fmt::Display>(_: T) -> Self {
        NotNone
    }
}

macro_rules! not_none {
    ($($method:ident($($ty:ty),*)),* $(,)?) => {$(
        fn $method(self, $(_: $ty),*) -> Result<Probed, NotNone> {
            Err(NotNone)
        }
    )*};
}

impl ser::Serializer for Probe {
    type Ok = Probed;
    type Error = NotNone;
    type SerializeSeq = Impossible<Probed, NotNone>;
    type SerializeTuple = Impossible<Probed, NotNone>;
    type SerializeTupleStruct = Impossible<Probed, NotNone>;
    type SerializeTupleVariant = Impossible<Probed, NotNone>;
    type SerializeMap = Impossible<Probed, NotNone>;
    type SerializeStruct = Impossible<Probed, NotNone>;
    type SerializeStructVariant = Impossible<Probed, NotNone>;

    fn serialize_none(self) -> Result<Probed, NotNone> {
        Ok(Probed::None)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, inner: &T) -> Result<Probed, NotNone> {
        match inner.serialize(Probe) {
            Ok(_) => Ok(Probed::SomeOfNone),
            Err(NotNone) => Err(NotNone),
        }
    }

    fn serialize_unit(self) -> Result<Probed, NotNone> {
        Ok(Probed::Null)
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<Probed, NotNone> {
        Ok(Probed::Null)
    }

    fn serialize_f32(self, value: f32) -> Result<Probed, NotNone> {
        self.serialize_f64(f64::from(value))
    }

    // JSON writes a NaN or an infinity as `null`.
    fn serialize_f64(self, value: f64) -> Result<Probed, NotNone> {
        if value.is_finite() {
            Err(NotNone)
        } else {
            Ok(Probed::Null)
        }
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, _: &T) -> Result<Probed, NotNone> {
        Err(NotNone)
    }

    not_none!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    // Both codecs write a newtype struct as its inner value: one around what is written as
    // `null` is written so too.
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        inner: &T,
    ) -> Result<Probed, NotNone> {
        inner.serialize(Probe).map(|_| Probed::Null)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Probed, NotNone> {
        Err(NotNone)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotNone> {
        Err(NotNone)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotNone> {
        Err(NotNone)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotNone> {
        Err(NotNone)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotNone> {
        Err(NotNone)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotNone> {
        Err(NotNone)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, NotNone> {
        Err(NotNone)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotNone> {
        Err(NotNone)
    }
}

#[cfg(test)]
mod tests {
    use super::{Shape, shape};

    #[test]
    fn only_none_and_some_of_none_are_told_apart() {
        assert_eq!(shape(&None::<u32>), Shape::None);
        assert_eq!(shape(&Some(None::<u32>)), Shape::SomeOfNone);
        assert_eq!(shape(&Some(Some(None::<u32>))), Shape::SomeOfNone);
        for value in [
            shape(&Some(1u32)),
            shape(&Some(Some(1u32))),
            shape(&()),
            shape(&0u8),
        ] {
            assert_eq!(value, Shape::Value);
        }
        assert_eq!(shape("text"), Shape::Value);
        assert_eq!(shape(&vec![None::<u8>]), Shape::Value);
        assert_eq!(
            shape(&serde_json::Value::Null),
            Shape::Value,
            "a unit, not a None"
        );
        // Inside a `Some`, what is written as `null` would read back as `None`.
        for inner in [
            shape(&Some(serde_json::Value::Null)),
            shape(&Some(())),
            shape(&Some(f64::NAN)),
            shape(&Some(f32::INFINITY)),
        ] {
            assert_eq!(inner, Shape::SomeOfNone);
        }
        #[derive(serde::Serialize)]
        struct Reading(f64);
        #[derive(serde::Serialize)]
        struct Wrapped(Option<u8>);
        assert_eq!(shape(&Some(Reading(f64::NAN))), Shape::SomeOfNone);
        assert_eq!(shape(&Some(Wrapped(None))), Shape::SomeOfNone);
        assert_eq!(shape(&Some(Reading(1.0))), Shape::Value);
        assert_eq!(shape(&Wrapped(None)), Shape::Value, "reads back as itself");
        assert_eq!(shape(&Some(1.5f64)), Shape::Value);
        assert_eq!(shape(&f64::NAN), Shape::Value);
    }
}
