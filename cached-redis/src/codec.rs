//! The stored form of a value: JSON, readable in `redis-cli`, with room for metadata.
//!
//! `{"v":<value>,"at":<unix ms when computed>,"load_ms":<how long the load took>,"id":<the
//! load's random id>}`. Readers ignore fields they do not know, so later metadata (soft expiry,
//! early refresh) can be added without invalidating entries. An update (`update_*`) rewrites
//! `v`, keeps `at`, `load_ms` and `id` (which load the entry descends from) and adds a random
//! `rev`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::CacheValue;

/// Which load a stored value descends from. Updates keep it; a new load gets a new one, so an
/// update can tell an entry that other updates changed from one a load replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    /// Unix milliseconds when the load finished.
    at: u64,
    /// How long the load took.
    load_ms: u64,
    /// Random per load (`0` in entries written before it existed).
    id: u64,
}

impl Origin {
    /// The origin of a value computed just now by a load that took `load_time`.
    pub(crate) fn now(load_time: Duration) -> Origin {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Origin {
            at,
            load_ms: load_time.as_millis() as u64,
            id: crate::random::next_u64(),
        }
    }
}

// The fields are spelled out, not `#[serde(flatten)]`ed: flattening buffers the value through
// serde's `Content`, which loses `u128`s and raw values.
#[derive(Serialize)]
struct EnvelopeRef<'a, T> {
    v: &'a T,
    at: u64,
    load_ms: u64,
    id: u64,
    /// Random per update (absent from a load's value): two updates that compute the same value
    /// still write different bytes, so a compare-and-set sent again after a lost reply can
    /// tell its own write from another's.
    #[serde(skip_serializing_if = "Option::is_none")]
    rev: Option<u64>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    v: T,
}

#[derive(Deserialize)]
struct EnvelopeWithOrigin<T> {
    v: T,
    #[serde(default)]
    at: u64,
    #[serde(default)]
    load_ms: u64,
    #[serde(default)]
    id: u64,
}

/// Encodes a value computed just now by a load that took `load_time`.
pub(crate) fn encode<T: CacheValue>(value: &T, load_time: Duration) -> serde_json::Result<Vec<u8>> {
    write(value, Origin::now(load_time), None)
}

/// Encodes a value that descends from the load `origin` (an update's result), with a fresh
/// revision.
pub(crate) fn encode_from<T: CacheValue>(value: &T, origin: Origin) -> serde_json::Result<Vec<u8>> {
    write(value, origin, Some(crate::random::next_u64()))
}

fn write<T: CacheValue>(
    value: &T,
    origin: Origin,
    rev: Option<u64>,
) -> serde_json::Result<Vec<u8>> {
    let Origin { at, load_ms, id } = origin;
    serde_json::to_vec(&EnvelopeRef {
        v: value,
        at,
        load_ms,
        id,
        rev,
    })
}

/// Decodes a stored value.
pub(crate) fn decode<T: CacheValue>(bytes: &[u8]) -> serde_json::Result<T> {
    serde_json::from_slice::<Envelope<T>>(bytes).map(|e| e.v)
}

/// Decodes a stored value with the load it descends from.
pub(crate) fn decode_with_origin<T: CacheValue>(bytes: &[u8]) -> serde_json::Result<(T, Origin)> {
    let e = serde_json::from_slice::<EnvelopeWithOrigin<T>>(bytes)?;
    let origin = Origin {
        at: e.at,
        load_ms: e.load_ms,
        id: e.id,
    };
    Ok((e.v, origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_stays_readable() {
        let bytes = encode(
            &vec!["a".to_owned(), "b".to_owned()],
            Duration::from_millis(12),
        )
        .unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with(r#"{"v":["a","b"],"at":"#), "{text}");
        assert!(text.contains(r#","load_ms":12,"id":"#), "{text}");
        assert_eq!(decode::<Vec<String>>(&bytes).unwrap(), ["a", "b"]);
    }

    #[test]
    fn other_shapes_fail_to_decode() {
        let bytes = encode(&"text".to_owned(), Duration::ZERO).unwrap();
        assert!(decode::<u64>(&bytes).is_err());
        assert!(decode::<u64>(b"garbage").is_err());
        assert!(decode::<Option<u64>>(br#"{"v":null}"#).unwrap().is_none());
    }

    #[test]
    fn an_update_keeps_its_origin_and_a_load_gets_a_new_one() {
        let bytes = encode(&1u32, Duration::from_millis(3)).unwrap();
        let (value, origin) = decode_with_origin::<u32>(&bytes).unwrap();
        let updated = encode_from(&(value + 1), origin).unwrap();
        assert_eq!(decode_with_origin::<u32>(&updated).unwrap(), (2, origin));
        let again = encode_from(&(value + 1), origin).unwrap();
        assert_ne!(
            updated, again,
            "two updates to one value write different bytes"
        );
        let reloaded = encode(&1u32, Duration::from_millis(3)).unwrap();
        assert_ne!(decode_with_origin::<u32>(&reloaded).unwrap().1, origin);
        // Entries stored before origins had ids still decode.
        let old = decode_with_origin::<u32>(br#"{"v":5,"at":1,"load_ms":2}"#).unwrap();
        assert_eq!(old.0, 5);
        // Values flattening would lose.
        let big = encode(&u128::MAX, Duration::ZERO).unwrap();
        assert_eq!(decode_with_origin::<u128>(&big).unwrap().0, u128::MAX);
    }
}
