//! zstd compression of encoded values (the `zstd` feature). A compressed value is a zstd
//! frame, told apart from the codecs' output by its magic number; without the feature such a
//! value does not decode (and is reloaded), it is never misread.

use crate::codec::CodecError;
use crate::format::Compression;

/// The first four bytes of every zstd frame.
const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// zstd's own default level: fast to compress, and decompression costs the same at any level.
#[cfg(feature = "zstd")]
const LEVEL: i32 = 3;

/// The longest value Redis stores (512 MiB): the bound on what a frame may decompress to.
#[cfg(feature = "zstd")]
const LONGEST: usize = 512 * 1024 * 1024;

pub(crate) fn is_compressed(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// `bytes` compressed as `compression` says, or as they are when that does not make them
/// smaller.
#[cfg(feature = "zstd")]
pub(crate) fn compressed(bytes: Vec<u8>, compression: Compression) -> Vec<u8> {
    match compression {
        // Nothing longer than a read accepts: such a value would fail every hit.
        Compression::Zstd { above } if bytes.len() > above && bytes.len() <= LONGEST => {
            match zstd::bulk::compress(&bytes, LEVEL) {
                Ok(smaller) if smaller.len() < bytes.len() => smaller,
                _ => bytes,
            }
        }
        _ => bytes,
    }
}

/// Without the feature, a cache or policy cannot be configured to compress.
#[cfg(not(feature = "zstd"))]
pub(crate) fn compressed(bytes: Vec<u8>, _compression: Compression) -> Vec<u8> {
    bytes
}

#[cfg(feature = "zstd")]
pub(crate) fn decompressed(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    let error = |e: std::io::Error| CodecError::Compressed(e.to_string());
    // A frame written in one call records its length; others are decompressed in steps.
    match zstd::zstd_safe::get_frame_content_size(bytes) {
        Ok(Some(length)) if length <= LONGEST as u64 => {
            zstd::bulk::decompress(bytes, length as usize).map_err(error)
        }
        _ => {
            use std::io::Read;
            let mut plain = Vec::new();
            zstd::stream::read::Decoder::new(bytes)
                .map_err(error)?
                .take(LONGEST as u64 + 1)
                .read_to_end(&mut plain)
                .map_err(error)?;
            if plain.len() > LONGEST {
                return Err(CodecError::Compressed(
                    "decompresses to more than 512 MiB".into(),
                ));
            }
            Ok(plain)
        }
    }
}

#[cfg(not(feature = "zstd"))]
pub(crate) fn decompressed(_bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    Err(CodecError::Compressed(
        "the value is zstd-compressed; cached-redis's `zstd` feature reads it".into(),
    ))
}
