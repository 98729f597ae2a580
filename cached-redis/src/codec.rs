//! The stored form of a value: JSON, readable in `redis-cli`, with room for metadata.
//!
//! `{"v":<value>,"at":<unix ms when computed>,"load_ms":<how long the load took>}`. Readers
//! ignore fields they do not know, so later metadata (soft expiry, early refresh) can be added
//! without invalidating entries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::CacheValue;

#[derive(Serialize)]
struct EnvelopeRef<'a, T> {
    v: &'a T,
    at: u64,
    load_ms: u64,
}

#[derive(Deserialize)]
struct Envelope<T> {
    v: T,
}

/// Encodes a value computed just now by a load that took `load_time`.
pub(crate) fn encode<T: CacheValue>(value: &T, load_time: Duration) -> serde_json::Result<Vec<u8>> {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    serde_json::to_vec(&EnvelopeRef {
        v: value,
        at,
        load_ms: load_time.as_millis() as u64,
    })
}

/// Decodes a stored value.
pub(crate) fn decode<T: CacheValue>(bytes: &[u8]) -> serde_json::Result<T> {
    serde_json::from_slice::<Envelope<T>>(bytes).map(|e| e.v)
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
        assert!(text.ends_with(r#","load_ms":12}"#), "{text}");
        assert_eq!(decode::<Vec<String>>(&bytes).unwrap(), ["a", "b"]);
    }

    #[test]
    fn other_shapes_fail_to_decode() {
        let bytes = encode(&"text".to_owned(), Duration::ZERO).unwrap();
        assert!(decode::<u64>(&bytes).is_err());
        assert!(decode::<u64>(b"garbage").is_err());
        assert!(decode::<Option<u64>>(br#"{"v":null}"#).unwrap().is_none());
    }
}
