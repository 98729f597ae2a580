//! The stored form of a value: an envelope with room for metadata, in JSON (readable in
//! `redis-cli`) or MessagePack, compressed or not (see [`crate::stored::format`]).
//!
//! `{"v":<value>,"at":<unix ms when computed>,"load_ms":<how long the load took>,"id":<the
//! load's random id>}`, and `"exp":<unix ms when its TTL ends>` after `id` for a function with
//! `stale`, early refresh or `fail_safe` (Redis keeps such an entry past it). Readers ignore
//! fields they do not know, so later metadata can be added without invalidating entries. An
//! update (`update_*`) rewrites `v`, keeps `at`, `load_ms`, `id` (which load the entry descends
//! from) and `exp`, and adds a random `rev`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::CacheValue;
use crate::stored::format::{Codec, Compression, Format};
use crate::stored::{compress, value_first};

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
    /// Unix milliseconds when the entry's TTL ends (its soft expiry), for an entry Redis keeps
    /// past it; `0` when it is not stored.
    exp: u64,
}

impl Origin {
    /// How long the load took, in milliseconds.
    pub(crate) fn load_ms(&self) -> u64 {
        self.load_ms
    }

    /// How long, by this process's clock, until Redis drops an entry of `policy`: its soft
    /// expiry plus what `policy` keeps past it, never more than its longest TTL plus that (a
    /// writer whose clock runs ahead does not keep it fresh longer). An entry written without
    /// its soft expiry (by a build before it was stored) is taken as loaded at `at` with the
    /// full `ttl`; one without either, as gone.
    pub(crate) fn left_ms(&self, policy: &crate::Policy) -> u64 {
        let kept = policy.kept_ms();
        let longest = policy.ttl().max(policy.none_ttl().unwrap_or_default());
        let longest = u64::try_from(longest.as_millis()).unwrap_or(u64::MAX);
        let now = unix_ms();
        let ends = match (self.exp, self.at) {
            (0, 0) => return 0,
            (0, at) => at.saturating_add(longest),
            (exp, _) => exp.min(now.saturating_add(longest)),
        };
        ends.saturating_add(kept).saturating_sub(now)
    }

    /// How long until the entry's TTL ends by this process's clock (0 once it has), if its soft
    /// expiry is stored.
    pub(crate) fn fresh_ms(&self) -> Option<u64> {
        (self.exp > 0).then(|| self.exp.saturating_sub(unix_ms()))
    }

    /// The origin of a value computed just now by a load that took `load_time`, whose TTL
    /// ends `soft_ttl_ms` from now if its soft expiry is stored.
    pub(crate) fn now(load_time: Duration, soft_ttl_ms: Option<u64>) -> Origin {
        let at = unix_ms();
        Origin {
            at,
            load_ms: load_time.as_millis() as u64,
            id: crate::random::next_u64(),
            exp: soft_ttl_ms.map_or(0, |ttl| at.saturating_add(ttl)),
        }
    }
}

/// Now, in Unix milliseconds (0 for a clock before 1970).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// The fields are spelled out, not `#[serde(flatten)]`ed: flattening buffers the value through
// serde's `Content`, which loses `u128`s and raw values.
#[derive(Serialize)]
struct EnvelopeRef<'a, T> {
    v: &'a T,
    at: u64,
    load_ms: u64,
    id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    exp: u64,
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
    #[serde(default)]
    exp: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a value did not encode or decode.
#[derive(Debug)]
pub(crate) enum CodecError {
    Json(serde_json::Error),
    MessagePackEncode(rmp_serde::encode::Error),
    MessagePackDecode(rmp_serde::decode::Error),
    Compressed(compress::Unreadable),
    /// The first byte is none of the formats'.
    Unknown(Option<u8>),
}

impl From<compress::Unreadable> for CodecError {
    fn from(unreadable: compress::Unreadable) -> CodecError {
        CodecError::Compressed(unreadable)
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Json(e) => write!(f, "JSON: {e}"),
            CodecError::MessagePackEncode(e) => write!(f, "MessagePack: {e}"),
            CodecError::MessagePackDecode(e) => write!(f, "MessagePack: {e}"),
            CodecError::Compressed(e) => write!(f, "zstd: {e}"),
            CodecError::Unknown(None) => f.write_str("the stored value is empty"),
            CodecError::Unknown(Some(byte)) => {
                write!(
                    f,
                    "the stored value starts with {byte:#04x}, which no codec writes"
                )
            }
        }
    }
}

/// Encodes a value computed just now by a load that took `load_time`, with its soft expiry
/// `soft_ttl_ms` from now if it is to be stored.
pub(crate) fn encode<T: CacheValue>(
    value: &T,
    load_time: Duration,
    soft_ttl_ms: Option<u64>,
    format: Format,
) -> Result<Vec<u8>, CodecError> {
    write(value, Origin::now(load_time, soft_ttl_ms), None, format)
}

/// Encodes a value that descends from the load `origin` (an update's result), with a fresh
/// revision.
pub(crate) fn encode_from<T: CacheValue>(
    value: &T,
    origin: Origin,
    format: Format,
) -> Result<Vec<u8>, CodecError> {
    write(value, origin, Some(crate::random::next_u64()), format)
}

fn write<T: CacheValue>(
    value: &T,
    origin: Origin,
    rev: Option<u64>,
    format: Format,
) -> Result<Vec<u8>, CodecError> {
    let Origin {
        at,
        load_ms,
        id,
        exp,
    } = origin;
    let envelope = EnvelopeRef {
        v: value,
        at,
        load_ms,
        id,
        exp,
        rev,
    };
    let bytes = match format.codec {
        Codec::Json => serde_json::to_vec(&envelope).map_err(CodecError::Json)?,
        // By name, as JSON: `#[serde(skip_serializing_if)]`, `default` and renames work.
        // Human-readable, as JSON is: serde's buffering (untagged and internally tagged enums,
        // `flatten`) reads as human-readable, so `IpAddr`s and the like must be written so.
        Codec::MessagePack => {
            let mut bytes = Vec::new();
            let mut writer = rmp_serde::Serializer::new(&mut bytes)
                .with_struct_map()
                .with_human_readable();
            envelope
                .serialize(&mut writer)
                .map_err(CodecError::MessagePackEncode)?;
            bytes
        }
    };
    Ok(compress::compressed(bytes, format.compression))
}

/// Decodes a stored value, in whichever format it was written.
pub(crate) fn decode<T: CacheValue>(bytes: &[u8]) -> Result<T, CodecError> {
    if let Some(value) = value_first::value_of(bytes) {
        return Ok(value);
    }
    read::<Envelope<T>>(bytes).map(|(e, _)| e.v)
}

/// Decodes a stored value with the load it descends from and the format it was written in.
pub(crate) fn decode_with_origin<T: CacheValue>(
    bytes: &[u8],
) -> Result<(T, Origin, Format), CodecError> {
    if let Some(read) = value_first::read::<T>(bytes) {
        let origin = Origin {
            at: read.at,
            load_ms: read.load_ms,
            id: read.id,
            exp: read.exp,
        };
        return Ok((read.v, origin, Format::default()));
    }
    let (e, format) = read::<EnvelopeWithOrigin<T>>(bytes)?;
    let origin = Origin {
        at: e.at,
        load_ms: e.load_ms,
        id: e.id,
        exp: e.exp,
    };
    Ok((e.v, origin, format))
}

/// The origin of a stored value, in whichever format it was written, without decoding the
/// value into a type.
pub(crate) fn origin_of(bytes: &[u8]) -> Option<Origin> {
    let (e, _) = read::<EnvelopeWithOrigin<serde::de::IgnoredAny>>(bytes).ok()?;
    Some(Origin {
        at: e.at,
        load_ms: e.load_ms,
        id: e.id,
        exp: e.exp,
    })
}

/// Whether `value`, decoded from `stored`, writes back everything `stored` holds, in its
/// format: a value written by a build whose type has fields this one does not know (or a
/// changed shape) does not, and rewriting it would drop them. Compared as data (maps in any
/// order), not as bytes.
pub(crate) fn reads_whole<T: CacheValue>(stored: &[u8], value: &T) -> bool {
    let decompressed;
    let plain = if compress::is_compressed(stored) {
        match compress::decompressed(stored) {
            Ok(bytes) => {
                decompressed = bytes;
                &decompressed[..]
            }
            Err(_) => return false,
        }
    } else {
        stored
    };
    let Ok((found, codec)) = data_of(plain) else {
        return false;
    };
    let origin = Origin {
        at: 0,
        load_ms: 0,
        id: 0,
        exp: 0,
    };
    let compression = Compression::None;
    let Ok(rewritten) = write(value, origin, None, Format { codec, compression }) else {
        return false;
    };
    data_of(&rewritten).is_ok_and(|(again, _)| again == found)
}

/// A stored value's `v`, as data: JSON's own value, or MessagePack's with every map's entries
/// in one order.
#[derive(PartialEq)]
enum Data {
    Json(serde_json::Value),
    Pack(rmpv::Value),
}

/// The envelope's fields this build writes. An entry with others (metadata a newer build
/// added) is not read whole either: an update would write it back without them.
const ENVELOPE_FIELDS: [&str; 6] = ["v", "at", "load_ms", "id", "exp", "rev"];

fn data_of(plain: &[u8]) -> Result<(Data, Codec), CodecError> {
    let unreadable = || CodecError::Unknown(plain.first().copied());
    // Read as a hit and an update read it: a value at the recursion limit that both read is
    // read whole here too.
    if let Some(v) = value_first::value_of(plain) {
        return Ok((Data::Json(v), Codec::Json));
    }
    if plain.first() == Some(&b'{') {
        let serde_json::Value::Object(mut fields) =
            serde_json::from_slice(plain).map_err(CodecError::Json)?
        else {
            return Err(unreadable());
        };
        if fields
            .keys()
            .any(|f| !ENVELOPE_FIELDS.contains(&f.as_str()))
        {
            return Err(unreadable());
        }
        let v = fields.remove("v").ok_or_else(unreadable)?;
        return Ok((Data::Json(v), Codec::Json));
    }
    let envelope = rmpv::decode::read_value(&mut &plain[..]).map_err(|_| unreadable())?;
    let rmpv::Value::Map(fields) = envelope else {
        return Err(unreadable());
    };
    let known = |name: &rmpv::Value| name.as_str().is_some_and(|n| ENVELOPE_FIELDS.contains(&n));
    if !fields.iter().all(|(name, _)| known(name)) {
        return Err(unreadable());
    }
    let v = fields
        .into_iter()
        .find_map(|(name, v)| (name.as_str() == Some("v")).then_some(v))
        .ok_or_else(unreadable)?;
    Ok((Data::Pack(in_one_order(v)), Codec::MessagePack))
}

/// `value` with the entries of every map in it sorted by their keys' encoding.
fn in_one_order(value: rmpv::Value) -> rmpv::Value {
    match value {
        rmpv::Value::Array(items) => {
            rmpv::Value::Array(items.into_iter().map(in_one_order).collect())
        }
        rmpv::Value::Map(entries) => {
            let mut entries: Vec<(Vec<u8>, rmpv::Value, rmpv::Value)> = entries
                .into_iter()
                .map(|(k, v)| {
                    let mut encoded = Vec::new();
                    let _ = rmpv::encode::write_value(&mut encoded, &k);
                    (encoded, in_one_order(k), in_one_order(v))
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            rmpv::Value::Map(entries.into_iter().map(|(_, k, v)| (k, v)).collect())
        }
        other => other,
    }
}

/// Reads an envelope, telling the format by its first bytes.
fn read<E: DeserializeOwned>(bytes: &[u8]) -> Result<(E, Format), CodecError> {
    if compress::is_compressed(bytes) {
        let plain = compress::decompressed(bytes)?;
        let (envelope, codec) = read_plain(&plain)?;
        // An update writes what it changed compressed again, whatever its length.
        let compression = Compression::Zstd { above: 0 };
        return Ok((envelope, Format { codec, compression }));
    }
    let (envelope, codec) = read_plain(bytes)?;
    let compression = Compression::None;
    Ok((envelope, Format { codec, compression }))
}

fn read_plain<E: DeserializeOwned>(bytes: &[u8]) -> Result<(E, Codec), CodecError> {
    match bytes.first() {
        Some(b'{') => serde_json::from_slice(bytes)
            .map(|e| (e, Codec::Json))
            .map_err(CodecError::Json),
        // A fixmap, map16 or map32: the envelope is a map.
        Some(0x80..=0x8f | 0xde | 0xdf) => {
            let mut reader = rmp_serde::Deserializer::from_read_ref(bytes).with_human_readable();
            E::deserialize(&mut reader)
                .map(|e| (e, Codec::MessagePack))
                .map_err(CodecError::MessagePackDecode)
        }
        other => Err(CodecError::Unknown(other.copied())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Format = Format {
        codec: Codec::Json,
        compression: Compression::None,
    };
    const MSGPACK: Format = Format {
        codec: Codec::MessagePack,
        compression: Compression::None,
    };

    #[test]
    fn round_trips_and_stays_readable() {
        let bytes = encode(
            &vec!["a".to_owned(), "b".to_owned()],
            Duration::from_millis(12),
            None,
            JSON,
        )
        .unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with(r#"{"v":["a","b"],"at":"#), "{text}");
        assert!(text.contains(r#","load_ms":12,"id":"#), "{text}");
        assert_eq!(decode::<Vec<String>>(&bytes).unwrap(), ["a", "b"]);
    }

    #[test]
    fn other_shapes_fail_to_decode() {
        for format in [JSON, MSGPACK] {
            let bytes = encode(&"text".to_owned(), Duration::ZERO, None, format).unwrap();
            assert!(decode::<u64>(&bytes).is_err());
        }
        assert!(decode::<u64>(b"garbage").is_err());
        assert!(
            decode::<u64>(b"")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(decode::<Option<u64>>(br#"{"v":null}"#).unwrap().is_none());
    }

    #[test]
    fn the_value_first_shortcut_reads_what_the_whole_envelope_reads() {
        let written = [
            br#"{"v":12,"at":1,"load_ms":2,"id":3}"#.as_slice(),
            br#"{"v":12}"#,
            br#"{"at":1,"v":12}"#,
            br#"{ "v": 12 , "at": 1 }"#,
            br#"{"v":12 ,"at":1}"#,
        ];
        for bytes in written {
            assert_eq!(decode::<u64>(bytes).unwrap(), 12, "{bytes:?}");
        }
        let refused = [
            br#"{"v":12"#.as_slice(),
            br#"{"v":12x}"#,
            br#"{"v":12,"at":1"#,
            br#"{"v":"12","at":1}"#,
            br#"{"v":12]"#,
            br#"{"v":12,"v":13}"#,
            br#"{"v":12}{"v":13}"#,
            br#"{"v":12}}"#,
            br#"{"v":12,}"#,
            br#"{"v":12,garbage}"#,
            br#"{"v":12,"at":}"#,
        ];
        for bytes in refused {
            assert!(decode::<u64>(bytes).is_err(), "{bytes:?}");
            assert!(value_first::read::<u64>(bytes).is_none(), "{bytes:?}");
        }
    }

    #[test]
    fn an_update_keeps_its_origin_and_a_load_gets_a_new_one() {
        for format in [JSON, MSGPACK] {
            let bytes = encode(&1u32, Duration::from_millis(3), None, format).unwrap();
            let (value, origin, found) = decode_with_origin::<u32>(&bytes).unwrap();
            assert_eq!(found, format);
            let updated = encode_from(&(value + 1), origin, found).unwrap();
            assert_eq!(
                decode_with_origin::<u32>(&updated).unwrap(),
                (2, origin, format)
            );
            let again = encode_from(&(value + 1), origin, found).unwrap();
            assert_ne!(
                updated, again,
                "two updates to one value write different bytes"
            );
            let reloaded = encode(&1u32, Duration::from_millis(3), None, format).unwrap();
            assert_ne!(decode_with_origin::<u32>(&reloaded).unwrap().1, origin);
            // Values flattening would lose.
            let big = encode(&u128::MAX, Duration::ZERO, None, format).unwrap();
            assert_eq!(decode_with_origin::<u128>(&big).unwrap().0, u128::MAX);
        }
        // An update keeps the soft expiry; entries stored before it existed read without one.
        for format in [JSON, MSGPACK] {
            let bytes = encode(&1u32, Duration::ZERO, Some(60_000), format).unwrap();
            let (_, origin, _) = decode_with_origin::<u32>(&bytes).unwrap();
            assert!(origin.exp >= origin.at + 60_000, "{origin:?}");
            let updated = encode_from(&2u32, origin, format).unwrap();
            assert_eq!(decode_with_origin::<u32>(&updated).unwrap().1, origin);
            assert!(reads_whole(&updated, &2u32));
        }
        // Entries stored before origins had ids still decode.
        let old = decode_with_origin::<u32>(br#"{"v":5,"at":1,"load_ms":2}"#).unwrap();
        assert_eq!(old.0, 5);
    }

    #[test]
    fn an_entry_ends_at_its_soft_expiry_or_else_a_ttl_after_its_load() {
        let policy = crate::Policy::new("f", Duration::from_secs(60))
            .unwrap()
            .with_stale(Duration::from_secs(10))
            .unwrap();
        let now = unix_ms();
        let origin = |at, exp| Origin {
            at,
            load_ms: 0,
            id: 1,
            exp,
        };
        let near = |left: u64, expected: u64| left.abs_diff(expected) < 1_000;
        // Soft expiry 5 s ago: Redis has the rest of `stale` left.
        assert!(near(origin(now, now - 5_000).left_ms(&policy), 5_000));
        // Written before soft expiries were stored: a TTL after its load.
        assert!(near(origin(now - 65_000, 0).left_ms(&policy), 5_000));
        assert_eq!(origin(0, 0).left_ms(&policy), 0);
        // A writer's clock far ahead: no longer than the TTL from now.
        assert!(near(origin(now, now + 3_600_000).left_ms(&policy), 70_000));
    }

    /// What serde attributes do to a value must survive MessagePack as it survives JSON.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Row {
        id: u64,
        #[serde(rename = "displayName")]
        name: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        note: Option<String>,
        #[serde(default)]
        tags: Vec<String>,
        kind: Kind,
        any: Loose,
        bytes: Vec<u8>,
        at: (i64, f64),
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Kind {
        Unit,
        Pair(u8, u8),
        Named { deep: Option<Box<Kind>> },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Number(i64),
        Address(std::net::IpAddr),
        Text(String),
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum Tagged {
        Host { ip: std::net::IpAddr },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Flat {
        id: u32,
        #[serde(flatten)]
        rest: Tagged,
    }

    fn row() -> Row {
        Row {
            id: u64::MAX,
            name: "Ada".into(),
            note: None,
            tags: vec![],
            kind: Kind::Named {
                deep: Some(Box::new(Kind::Pair(1, 2))),
            },
            any: Loose::Text("x".into()),
            bytes: vec![0, 255, 7],
            at: (-5, 1.5),
        }
    }

    #[test]
    fn message_pack_keeps_what_serde_attributes_say() {
        let bytes = encode(&row(), Duration::ZERO, None, MSGPACK).unwrap();
        assert!(matches!(bytes[0], 0x80..=0x8f), "a map: {:#04x}", bytes[0]);
        assert_eq!(decode::<Row>(&bytes).unwrap(), row());
        let with_unit = Row {
            kind: Kind::Unit,
            any: Loose::Number(-3),
            ..row()
        };
        let bytes = encode(&with_unit, Duration::ZERO, None, MSGPACK).unwrap();
        assert_eq!(decode::<Row>(&bytes).unwrap(), with_unit);
        // Values serde buffers (untagged, internally tagged, flattened) with an `IpAddr`.
        let ip = std::net::IpAddr::from([10, 0, 0, 1]);
        let buffered = (
            Loose::Address(ip),
            Flat {
                id: 1,
                rest: Tagged::Host { ip },
            },
        );
        let bytes = encode(&buffered, Duration::ZERO, None, MSGPACK).unwrap();
        assert_eq!(decode::<(Loose, Flat)>(&bytes).unwrap(), buffered);
        // A field added later with `default` reads entries written before it.
        #[derive(Debug, Serialize, Deserialize)]
        struct Before {
            id: u64,
        }
        #[derive(Debug, Serialize, Deserialize)]
        struct After {
            id: u64,
            #[serde(default)]
            added: Option<String>,
        }
        let bytes = encode(&Before { id: 9 }, Duration::ZERO, None, MSGPACK).unwrap();
        let after = decode::<After>(&bytes).unwrap();
        assert_eq!((after.id, after.added), (9, None));
    }

    #[test]
    fn a_u128_under_serde_buffering_reads_back_in_neither_codec() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(untagged)]
        enum Big {
            Wide(u128),
        }
        // serde's buffering has no 128-bit integers: the codecs guide page says so.
        for format in [JSON, MSGPACK] {
            let bytes = encode(&Big::Wide(7), Duration::ZERO, None, format).unwrap();
            assert!(decode::<Big>(&bytes).is_err(), "{format:?}");
        }
    }

    #[test]
    fn every_format_reads_whatever_is_configured() {
        let json = encode(&row(), Duration::ZERO, None, JSON).unwrap();
        let msgpack = encode(&row(), Duration::ZERO, None, MSGPACK).unwrap();
        assert_ne!(json, msgpack);
        assert_eq!(decode::<Row>(&json).unwrap(), row());
        assert_eq!(decode::<Row>(&msgpack).unwrap(), row());
        assert!(
            msgpack.len() < json.len(),
            "{} < {}",
            msgpack.len(),
            json.len()
        );
        let unknown = decode::<Row>(&[0x01, 0x02]).unwrap_err();
        assert!(unknown.to_string().contains("0x01"), "{unknown}");
    }

    #[test]
    fn a_value_with_fields_this_build_does_not_know_does_not_read_whole() {
        #[derive(Serialize, Deserialize)]
        struct Newer {
            id: u32,
            #[serde(default)]
            price_cents: u64,
            tags: std::collections::HashMap<String, f32>,
        }
        #[derive(Serialize, Deserialize)]
        struct Older {
            id: u32,
            tags: std::collections::HashMap<String, f32>,
        }
        let tags: std::collections::HashMap<_, _> =
            (0..20).map(|i| (format!("t{i}"), 0.1 * i as f32)).collect();
        for format in [JSON, MSGPACK] {
            let newer = Newer {
                id: 1,
                price_cents: 999,
                tags: tags.clone(),
            };
            let stored = encode(&newer, Duration::ZERO, None, format).unwrap();
            let older: Older = decode(&stored).unwrap();
            assert!(!reads_whole(&stored, &older), "{format:?}");
            let same: Newer = decode(&stored).unwrap();
            assert!(
                reads_whole(&stored, &same),
                "{format:?}: maps in another order, f32s"
            );
        }
    }

    /// Metadata a newer build adds to the envelope (a soft expiry) would be dropped by a
    /// rewrite too.
    #[test]
    fn an_envelope_with_fields_this_build_does_not_know_does_not_read_whole() {
        let newer = br#"{"v":7,"at":1,"load_ms":2,"id":3,"soft_expiry_at":4}"#;
        let value: u32 = decode(newer).unwrap();
        assert!(!reads_whole(newer, &value));
        let known = br#"{"v":7,"at":1,"load_ms":2,"id":3,"rev":5}"#;
        assert!(reads_whole(known, &value));
    }

    /// What MessagePack holds and JSON's value type does not: maps keyed by integers, bytes
    /// (a `u128` is written as bytes), compressed or not.
    #[test]
    fn message_pack_values_of_any_shape_read_whole() {
        #[derive(Serialize, Deserialize)]
        struct Odd {
            by_id: std::collections::HashMap<u64, String>,
            big: u128,
        }
        let odd = Odd {
            by_id: (0..20).map(|i| (i, format!("{i}"))).collect(),
            big: u128::MAX,
        };
        let compressed = Format {
            codec: Codec::MessagePack,
            compression: Compression::Zstd { above: 0 },
        };
        for format in [MSGPACK, compressed] {
            let stored = encode(&odd, Duration::ZERO, None, format).unwrap();
            let read: Odd = decode(&stored).unwrap();
            assert!(reads_whole(&stored, &read), "{format:?}");
        }
    }

    #[test]
    fn a_compressed_value_without_the_feature_is_an_error_not_a_misreading() {
        // zstd's magic number, then a broken frame.
        let frame = [
            0x28, 0xb5, 0x2f, 0xfd, b'{', b'"', b'v', b'"', b':', b'1', b'}',
        ];
        let error = decode::<u32>(&frame).unwrap_err().to_string();
        assert!(error.starts_with("zstd: "), "{error}");
        assert_eq!(
            error.contains("`zstd` feature"),
            !cfg!(feature = "zstd"),
            "{error}"
        );
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn large_values_are_compressed_and_small_ones_are_not() {
        let zstd = |codec| Format {
            codec,
            compression: Compression::Zstd { above: 1024 },
        };
        for codec in [Codec::Json, Codec::MessagePack] {
            let large = "word ".repeat(2000);
            let bytes = encode(&large, Duration::ZERO, None, zstd(codec)).unwrap();
            assert!(compress::is_compressed(&bytes));
            assert!(bytes.len() < 1000, "{}", bytes.len());
            let (value, _, found) = decode_with_origin::<String>(&bytes).unwrap();
            assert_eq!(value, large);
            let rewritten = Compression::Zstd { above: 0 };
            assert_eq!(
                found,
                Format {
                    codec,
                    compression: rewritten
                }
            );
            let small = encode(&"word".to_owned(), Duration::ZERO, None, zstd(codec)).unwrap();
            assert!(!compress::is_compressed(&small));
            assert_eq!(decode::<String>(&small).unwrap(), "word");
        }
        // Incompressible bytes are stored as encoded.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let kept = compress::compressed(noise.clone(), Compression::Zstd { above: 0 });
        assert_eq!(kept, noise);
    }
}
