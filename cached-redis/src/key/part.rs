//! The [`KeyPart`] impls of the standard library's types, and of the foreign id and date types
//! behind their features: how each value writes its key text.

use std::borrow::Cow;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use super::{KeyPart, KeyWriter};

macro_rules! display_key_part {
    ($($t:ty),* $(,)?) => {$(
        impl KeyPart for $t {
            fn write_key_part(&self, out: &mut KeyWriter) {
                use fmt::Write as _;
                let _ = write!(out, "{self}");
            }
        }
    )*};
}

/// Integers write their decimal digits (and a `-`), which need no escaping, through `itoa`
/// rather than `fmt`: an integer id is in most keys, and a near hit renders its key every call
/// (two ids cost some 230 instructions through a digit loop, 20 through itoa's tables).
macro_rules! integer_key_part {
    ($($t:ty),* $(,)?) => {$(
        impl KeyPart for $t {
            fn write_key_part(&self, out: &mut KeyWriter) {
                out.0.push_str(itoa::Buffer::new().format(*self));
            }
            const INTEGER: bool = true;
        }
    )*};
}

integer_key_part!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

display_key_part!(bool, char);

// Foreign id and date types, whose `Display` is injective (one text per value), behind the
// features of their crates: the orphan rule keeps users from implementing `KeyPart` for them.
#[cfg(feature = "uuid")]
display_key_part!(uuid::Uuid);
#[cfg(feature = "chrono")]
display_key_part!(
    chrono::NaiveDate,
    chrono::NaiveDateTime,
    chrono::NaiveTime,
    chrono::DateTime<chrono::Utc>,
);
#[cfg(feature = "time")]
display_key_part!(time::Date, time::PrimitiveDateTime, time::Time);

/// An instant with an offset is rendered in UTC: `12:00 +02:00` and `10:00 UTC` are one instant
/// (equal values), so they must be one key.
#[cfg(feature = "chrono")]
impl KeyPart for chrono::DateTime<chrono::FixedOffset> {
    fn write_key_part(&self, out: &mut KeyWriter) {
        self.to_utc().write_key_part(out);
    }
}

/// An instant with an offset is rendered in UTC (see the `chrono` impl).
#[cfg(feature = "time")]
impl KeyPart for time::OffsetDateTime {
    fn write_key_part(&self, out: &mut KeyWriter) {
        let utc = self.to_offset(time::UtcOffset::UTC);
        time::PrimitiveDateTime::new(utc.date(), utc.time()).write_key_part(out);
        out.write_str("Z");
    }
}

impl KeyPart for str {
    fn write_key_part(&self, out: &mut KeyWriter) {
        out.write_str(self);
    }
}

impl KeyPart for String {
    fn write_key_part(&self, out: &mut KeyWriter) {
        out.write_str(self);
    }
}

impl KeyPart for Cow<'_, str> {
    fn write_key_part(&self, out: &mut KeyWriter) {
        out.write_str(self);
    }
}

macro_rules! deref_key_part {
    ($($wrapper:ty),*) => {$(
        impl<T: KeyPart + ?Sized> KeyPart for $wrapper {
            fn write_key_part(&self, out: &mut KeyWriter) {
                (**self).write_key_part(out);
            }
            const IS_OPTION: bool = T::IS_OPTION;
            const INTEGER: bool = T::INTEGER;
        }
    )*};
}

deref_key_part!(&T, &mut T, Box<T>, Rc<T>, Arc<T>);

impl<T: KeyPart> KeyPart for Option<T> {
    fn write_key_part(&self, out: &mut KeyWriter) {
        match self {
            None => out.write_marker('0'),
            Some(inner) => {
                if T::IS_OPTION {
                    out.write_marker('1');
                }
                inner.write_key_part(out);
            }
        }
    }
    const IS_OPTION: bool = true;
}

/// A list is its elements' key text joined by `,`, each element's text escaped again (`\` and
/// `,` preceded by `\`, so nested lists and elements holding `,` stay apart), and `\e` when
/// empty: `ids:1,2,3`.
impl<T: KeyPart> KeyPart for [T] {
    fn write_key_part(&self, out: &mut KeyWriter) {
        if self.is_empty() {
            out.write_marker('e');
            return;
        }
        for (i, element) in self.iter().enumerate() {
            if i > 0 {
                out.0.push(',');
            }
            let mut text = KeyWriter(String::new());
            element.write_key_part(&mut text);
            for c in text.0.chars() {
                if matches!(c, '\\' | ',') {
                    out.0.push('\\');
                }
                out.0.push(c);
            }
        }
    }
    // A one-element list of options writes what its element does: an `Option` of the list
    // marks its `Some` as it does for a nested `Option`.
    const IS_OPTION: bool = T::IS_OPTION;
}

impl<T: KeyPart> KeyPart for Vec<T> {
    fn write_key_part(&self, out: &mut KeyWriter) {
        self.as_slice().write_key_part(out);
    }
    const IS_OPTION: bool = T::IS_OPTION;
}

impl<T: KeyPart, const N: usize> KeyPart for [T; N] {
    fn write_key_part(&self, out: &mut KeyWriter) {
        self.as_slice().write_key_part(out);
    }
    const IS_OPTION: bool = T::IS_OPTION;
}

#[cfg(test)]
mod tests {
    use crate::key::written_part;

    #[test]
    fn integers_write_what_display_writes() {
        for n in [0i64, 1, 9, 10, 42, -1, -10, i64::MAX, i64::MIN] {
            assert_eq!(written_part(&n), n.to_string());
        }
        for n in [0u128, 7, u128::from(u64::MAX) + 1, u128::MAX] {
            assert_eq!(written_part(&n), n.to_string());
        }
        for n in [i128::MIN, i128::MAX, -1] {
            assert_eq!(written_part(&n), n.to_string());
        }
        assert_eq!(written_part(&usize::MAX), usize::MAX.to_string());
        assert_eq!(written_part(&isize::MIN), isize::MIN.to_string());
        assert_eq!(written_part(&u8::MAX), "255");
    }
}
