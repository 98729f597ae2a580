//! zstd compression of encoded values (the `zstd` feature). A compressed value is a zstd
//! frame, told apart from the codecs' output by its magic number; without the feature such a
//! value does not decode (and is reloaded), it is never misread.

#[cfg(feature = "zstd")]
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::stored::format::Compression;

/// Why a compressed value could not be read (the codec reports it as `zstd: <why>`).
#[derive(Debug)]
pub(crate) struct Unreadable(String);

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

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

/// What the decompressions in flight in this process may hold at once: as much as one value
/// may decompress to. Values written by anyone with write access to Redis can then cost the
/// process 512 MiB at the most, however many are read at once; a decompression that would pass
/// the bound fails (a decode error: the loader answers, as for any value that does not read).
#[cfg(feature = "zstd")]
static IN_FLIGHT: Budget = Budget::new(LONGEST);

/// How much a frame of unknown length is decompressed in, each step reserved first.
#[cfg(feature = "zstd")]
const STEP: usize = 1 << 20;

/// Bytes that decompressions may hold at once.
#[cfg(feature = "zstd")]
pub(crate) struct Budget {
    used: AtomicUsize,
    most: usize,
}

/// A part of a [`Budget`], given back when dropped.
#[cfg(feature = "zstd")]
pub(crate) struct Held<'a> {
    budget: &'a Budget,
    bytes: usize,
}

#[cfg(feature = "zstd")]
impl Budget {
    const fn new(most: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            most,
        }
    }

    fn nothing(&self) -> Held<'_> {
        Held {
            budget: self,
            bytes: 0,
        }
    }
}

#[cfg(feature = "zstd")]
impl Held<'_> {
    /// Holds `bytes` in all, if the budget has room for the difference.
    fn grow_to(&mut self, bytes: usize) -> Result<(), Unreadable> {
        let more = bytes.saturating_sub(self.bytes);
        let budget = self.budget;
        budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|&total| total <= budget.most)
            })
            .map_err(|_| {
                Unreadable(format!(
                    "decompressions in flight already hold close to {} MiB",
                    budget.most >> 20
                ))
            })?;
        self.bytes += more;
        Ok(())
    }
}

#[cfg(feature = "zstd")]
impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A decompressed value, its part of the process's budget held until it is dropped.
pub(crate) struct Plain {
    bytes: Vec<u8>,
    #[cfg(feature = "zstd")]
    _held: Held<'static>,
}

impl std::ops::Deref for Plain {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(feature = "zstd")]
pub(crate) fn decompressed(bytes: &[u8]) -> Result<Plain, Unreadable> {
    let (bytes, _held) = decompressed_within(bytes, &IN_FLIGHT)?;
    Ok(Plain { bytes, _held })
}

/// `bytes` decompressed, at most 512 MiB of it, holding what it takes of `budget`.
#[cfg(feature = "zstd")]
fn decompressed_within<'b>(
    bytes: &[u8],
    budget: &'b Budget,
) -> Result<(Vec<u8>, Held<'b>), Unreadable> {
    let error = |e: std::io::Error| Unreadable(e.to_string());
    let mut held = budget.nothing();
    // A frame written in one call records its length; others are decompressed in steps.
    if let Ok(Some(length)) = zstd::zstd_safe::get_frame_content_size(bytes)
        && length <= LONGEST as u64
    {
        held.grow_to(length as usize)?;
        let plain = zstd::bulk::decompress(bytes, length as usize).map_err(error)?;
        return Ok((plain, held));
    }
    use std::io::Read;
    let mut decoder = zstd::stream::read::Decoder::new(bytes).map_err(error)?;
    let mut plain = Vec::new();
    loop {
        let start = plain.len();
        if start > LONGEST {
            return Err(Unreadable("decompresses to more than 512 MiB".into()));
        }
        held.grow_to(start + STEP)?;
        plain.resize(start + STEP, 0);
        let read = decoder.read(&mut plain[start..]).map_err(error)?;
        plain.truncate(start + read);
        if read == 0 {
            return Ok((plain, held));
        }
    }
}

#[cfg(not(feature = "zstd"))]
pub(crate) fn decompressed(_bytes: &[u8]) -> Result<Plain, Unreadable> {
    Err(Unreadable(
        "the value is zstd-compressed; cached-redis's `zstd` feature reads it".into(),
    ))
}

#[cfg(all(test, feature = "zstd"))]
mod tests {
    use super::*;

    /// Four values that decompress to more than the budget, read at once: the ones past the
    /// budget fail instead of growing the process.
    #[test]
    fn decompressions_in_flight_share_one_bound() {
        let budget = Budget::new(4 * STEP);
        let sized = zstd::bulk::compress(&vec![b'x'; 3 * STEP], 3).unwrap();
        let mut unsized_frame = Vec::new();
        let mut encoder = zstd::stream::write::Encoder::new(&mut unsized_frame, 3).unwrap();
        std::io::Write::write_all(&mut encoder, &vec![b'y'; 3 * STEP]).unwrap();
        encoder.finish().unwrap();
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&unsized_frame),
            Ok(None)
        ));

        let (first, held) = decompressed_within(&sized, &budget).unwrap();
        assert_eq!(first.len(), 3 * STEP);
        assert!(
            decompressed_within(&sized, &budget).is_err(),
            "a known length past it"
        );
        assert!(
            decompressed_within(&unsized_frame, &budget).is_err(),
            "steps past it"
        );
        drop(held);
        assert_eq!(
            budget.used.load(Ordering::Acquire),
            0,
            "given back, failures too"
        );
        let (second, _held) = decompressed_within(&unsized_frame, &budget).unwrap();
        assert_eq!(second.len(), 3 * STEP);
    }
}
