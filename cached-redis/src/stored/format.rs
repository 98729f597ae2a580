//! How values are written to Redis: the serialisation ([`Codec`]) and whether large values are
//! compressed ([`Compression`]). Reading does not depend on either: every stored value says what
//! it is by its first bytes, so a changed setting never makes existing entries unreadable.

use crate::Error;

/// The serialisation of stored values.
///
/// Every format is read whatever is configured (JSON starts with `{`, a MessagePack envelope
/// with a map marker, a zstd frame with its magic number), so switching codecs keeps the
/// entries already stored readable; a process running an older version of this crate reads
/// only JSON, so deploy a version that reads MessagePack everywhere before writing it.
///
/// ```
/// use cached_redis::{Codec, Policy};
/// use std::time::Duration;
///
/// let policy = Policy::new("report", Duration::from_secs(60))
///     .unwrap()
///     .with_codec(Codec::MessagePack);
/// assert_eq!(policy.codec(), Some(Codec::MessagePack));
/// assert_eq!(Codec::default(), Codec::Json);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Codec {
    /// JSON (`serde_json`): readable in `redis-cli`. The default.
    #[default]
    Json,
    /// MessagePack (`rmp-serde`), with struct fields by name (so `#[serde(default)]` and
    /// renamed fields behave as in JSON): smaller than JSON for numbers and binary data, and
    /// faster to decode for large strings.
    MessagePack,
}

/// Whether stored values are compressed.
///
/// Compression applies to the encoded value when it is longer than `above` bytes, and is
/// kept only when it makes the value smaller. zstd runs at its default level (3). It needs the
/// `zstd` feature; without it, [`CacheBuilder::compression`](crate::CacheBuilder::compression)
/// and [`Policy::with_compression`](crate::Policy::with_compression) refuse it.
///
/// ```
/// use cached_redis::{Compression, Policy};
/// use std::time::Duration;
///
/// let policy = Policy::new("report", Duration::from_secs(60)).unwrap();
/// let compressed = policy.with_compression(Compression::Zstd { above: 16 * 1024 });
/// assert_eq!(compressed.is_ok(), cfg!(feature = "zstd"));
/// assert_eq!(Compression::default(), Compression::None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Values are stored as encoded. The default.
    #[default]
    None,
    /// zstd for encoded values longer than `above` bytes.
    Zstd {
        /// The length, in bytes, over which a value is compressed.
        above: usize,
    },
}

impl Compression {
    /// `Ok` if this build can compress this way.
    pub(crate) fn available(self) -> Result<Compression, Error> {
        match self {
            Compression::Zstd { .. } if !cfg!(feature = "zstd") => Err(Error::InvalidConfig(
                "zstd compression needs cached-redis's `zstd` feature".into(),
            )),
            _ => Ok(self),
        }
    }
}

/// A codec and a compression: how one value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Format {
    pub(crate) codec: Codec,
    pub(crate) compression: Compression,
}
