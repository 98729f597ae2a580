//! The envelope exactly as this build writes it, read without serde's field machinery:
//! `{"v":<value>,"at":<n>,"load_ms":<n>,"id":<n>}`, with `,"exp":<n>` after `id` for an entry
//! kept past its TTL, and `,"rev":<n>` before the `}` after an update.
//!
//! A hit reads stored values through here. The derived reader (`Envelope` in `codec.rs`)
//! matched every field name through serde's identifier machinery and skipped the metadata value
//! by value, about 1,500 instructions a hit: more than half of what a hit spent over a plain
//! `GET` and decode. Here the value is read by serde_json and the rest is compared with the one
//! shape this build writes, byte by byte. Anything else (another field order, whitespace, a
//! field this build does not write, a duplicate, trailing bytes) is not read here: the envelope
//! is then read whole, which accepts what serde accepts and says why it refuses the rest.
//!
//! The value is read at the top level here, one level shallower than inside the envelope, so a
//! value nested to serde_json's recursion limit reads here and not whole; an update reads
//! through here too ([`read`] gives the metadata), so a hit and an update agree on it.

use serde::de::DeserializeOwned;

/// A value and the metadata of the load it descends from.
pub(super) struct ValueFirst<T> {
    pub(super) v: T,
    pub(super) at: u64,
    pub(super) load_ms: u64,
    pub(super) id: u64,
    pub(super) exp: u64,
}

/// `bytes` as this build writes an envelope, with its metadata, or `None`.
pub(super) fn read<T: DeserializeOwned>(bytes: &[u8]) -> Option<ValueFirst<T>> {
    let (v, tail) = value::<T>(bytes)?;
    let [at, load_ms, id, exp] = metadata::<true>(tail)?;
    Some(ValueFirst {
        v,
        at,
        load_ms,
        id,
        exp,
    })
}

/// The value of `bytes`, if they are an envelope as this build writes them (its metadata
/// checked, not read: what a hit needs).
pub(super) fn value_of<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let (v, tail) = value::<T>(bytes)?;
    metadata::<false>(tail).map(|_| v)
}

/// The value after `{"v":`, and the bytes after it.
fn value<T: DeserializeOwned>(bytes: &[u8]) -> Option<(T, &[u8])> {
    let rest = bytes.strip_prefix(br#"{"v":"#)?;
    let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<T>();
    let v = values.next()?.ok()?;
    Some((v, &rest[values.byte_offset()..]))
}

/// `at`, `load_ms`, `id` and `exp` (0 when absent) from what follows the value (computed when
/// `READ`, else 0), if it is exactly what this build writes there.
fn metadata<const READ: bool>(tail: &[u8]) -> Option<[u64; 4]> {
    let mut found = [0; 4];
    let mut tail = tail;
    for (slot, name) in [&br#","at":"#[..], br#","load_ms":"#, br#","id":"#]
        .into_iter()
        .enumerate()
    {
        (found[slot], tail) = number::<READ>(tail.strip_prefix(name)?)?;
    }
    if let Some(after) = tail.strip_prefix(br#","exp":"#) {
        (found[3], tail) = number::<READ>(after)?;
    }
    if let Some(after) = tail.strip_prefix(br#","rev":"#) {
        tail = number::<false>(after)?.1;
    }
    (tail == b"}").then_some(found)
}

/// A decimal `u64` (at most 20 digits, no leading zero) at the start of `bytes`, and what
/// follows it; its value is computed only when `READ`.
#[inline]
fn number<const READ: bool>(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = leading_digits(bytes);
    if digits == 0 || digits > 20 || (digits > 1 && bytes[0] == b'0') {
        return None;
    }
    let (number, rest) = bytes.split_at(digits);
    if !READ {
        return Some((0, rest));
    }
    let value = number.iter().try_fold(0u64, |n, &digit| {
        n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })?;
    Some((value, rest))
}

/// How many ASCII digits `bytes` starts with, eight bytes at a time: a byte is a digit when its
/// high nibble is 3, and still 3 after adding 6.
#[inline]
fn leading_digits(bytes: &[u8]) -> usize {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const THREES: u64 = 0x3030_3030_3030_3030;
    const SIXES: u64 = 0x0606_0606_0606_0606;
    let mut counted = 0;
    while let Some(chunk) = bytes.get(counted..counted + 8) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        // A carry out of a byte over 0xF9 only reaches bytes after it, past the first
        // non-digit, which is all that is looked for.
        let others = ((word & HIGH) ^ THREES) | ((word.wrapping_add(SIXES) & HIGH) ^ THREES);
        if others != 0 {
            return counted + (others.trailing_zeros() / 8) as usize;
        }
        counted += 8;
    }
    counted
        + bytes[counted..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_leading_digits_whatever_follows() {
        for bytes in [
            &b""[..],
            b"1",
            b"0123456789",
            b"12345678,",
            b"123456789012345678901234",
            b"12:",
            b"9/0",
            b"1\xff\xfa9",
            b"\xfa123",
            b"1234567\xff",
        ] {
            let expected = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            assert_eq!(leading_digits(bytes), expected, "{bytes:?}");
        }
        for byte in 0..=255u8 {
            let bytes = [b'1', b'2', byte, b'3', b'4', b'5', b'6', b'7', b'8'];
            let expected = if byte.is_ascii_digit() { 9 } else { 2 };
            assert_eq!(leading_digits(&bytes), expected, "{byte}");
        }
    }

    #[test]
    fn reads_the_shape_this_build_writes_and_nothing_else() {
        let found = read::<u8>(br#"{"v":1,"at":2,"load_ms":3,"id":4,"rev":5}"#).unwrap();
        assert_eq!((found.v, found.at, found.load_ms, found.id), (1, 2, 3, 4));
        let kept = read::<u8>(br#"{"v":1,"at":2,"load_ms":3,"id":4,"exp":9,"rev":5}"#).unwrap();
        assert_eq!((kept.id, kept.exp), (4, 9));
        assert_eq!(
            read::<u8>(br#"{"v":1,"at":2,"load_ms":3,"id":4}"#)
                .unwrap()
                .exp,
            0
        );
        let max = br#"{"v":1,"at":0,"load_ms":0,"id":18446744073709551615}"#;
        assert_eq!(read::<u8>(max).unwrap().id, u64::MAX);
        for other in [
            br#"{"v":1}"#.as_slice(),
            br#"{"v":1,"at":2,"load_ms":3}"#,
            br#"{"v":1,"at":2,"load_ms":3,"id":4,"soft":5}"#,
            br#"{"v":1,"at":2,"load_ms":3,"id":4,"id":4}"#,
            br#"{"v":1,"at":2,"load_ms":3,"id":4,"rev":5,"exp":9}"#,
            br#"{"v":1,"at":2,"load_ms":3,"id":4,"exp":9,"exp":9}"#,
            br#"{"v":1,"at":2,"load_ms":3,"id":4,"exp":"9"}"#,
            br#"{"v":1,"at":2,"load_ms":3,"id":18446744073709551616}"#,
            br#"{"v":1,"at":02,"load_ms":3,"id":4}"#,
            br#"{"v":1,"at":"2","load_ms":3,"id":4}"#,
            br#"{"v":1,"at":2,"load_ms":3,"id":4}}"#,
            br#"{"v":1,"at":2,"load_ms":3,"id":4} "#,
            br#"{"v":1,"v":1,"at":2,"load_ms":3,"id":4}"#,
            br#"{"at":2,"v":1}"#,
        ] {
            assert!(read::<u8>(other).is_none(), "{other:?}");
        }
    }
}
