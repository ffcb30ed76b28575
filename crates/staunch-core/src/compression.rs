//! Kafka's record-batch compression codecs, byte-compatible with the Java client and librdkafka.
//!
//! In a v2 batch only the *records section* (everything after the 61-byte header) is compressed;
//! the header stays plain and its CRC-32C covers the compressed bytes. So a broker checks and
//! stores a compressed batch without ever decompressing it, and hands consumers the bytes the
//! producer sent (DESIGN §3). Only producers ([`compress`], through
//! [`crate::BatchBuilder::compression`]) and readers ([`decompress`], through
//! [`crate::RecordBatch::decompressed`]) run these codecs.
//!
//! | codec | id | written as | read |
//! |---|---:|---|---|
//! | gzip | 1 | one gzip member (RFC 1952), level 6 | one or more gzip members |
//! | snappy | 2 | snappy-java's xerial framing, as the Java client writes it: a 16-byte header (`\x82SNAPPY\0`, version 1, compatible version 1), then blocks of at most 32 KiB, each a big-endian `u32` length and a raw snappy block | xerial framing (concatenated streams too), or a plain raw snappy block, as Kafka and librdkafka also accept |
//! | lz4 | 3 | an LZ4 frame with the correct header checksum (KIP-57; magic 0/1 batches had a broken one, v2 never), independent 64 KiB blocks, no block or content checksum, as the Java client writes it | any LZ4 frame |
//! | zstd | 4 | one zstd frame, level 3 | one or more zstd frames |
//!
//! # Bounded decompression
//!
//! Compressed bytes come from the network and from disk, so [`decompress`] never trusts them:
//! the output is capped at a caller-given limit ([`DEFAULT_MAX_DECOMPRESSED_SIZE`] by default
//! in [`crate::RecordBatch::decompressed`]) and anything that would expand past it fails with
//! [`CompressionError::TooLarge`] — a decompression bomb costs at most the limit, never more.
//! Output buffers grow as data actually arrives; sizes declared inside the data (snappy's
//! length prefix, xerial block lengths) are checked against the limit before anything is
//! allocated. zstd additionally refuses frames whose window exceeds 2^27 bytes (zstd's own
//! default cap, also what librdkafka and the Java client accept). Malformed input of any codec
//! is an error ([`CompressionError::Corrupt`]), never a panic.
//!
//! # Feature flags
//!
//! Each codec is a cargo feature of `staunch-core`, all on by default: `gzip` (flate2, pure
//! Rust), `snappy` (snap, pure Rust), `lz4` (lz4, builds the C library) and `zstd` (zstd, builds
//! the C library). With a codec's feature off, [`Compression::is_available`] is false and both
//! directions fail with [`CompressionError::Unavailable`]; uncompressed batches always work.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The compression codec of a batch: bits 0–2 of its attributes, and the names Kafka's
/// `compression.type` setting uses (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed records (`compression.type=none`, id 0). The default.
    #[default]
    None,
    /// gzip (id 1).
    Gzip,
    /// Snappy in snappy-java's xerial framing (id 2).
    Snappy,
    /// LZ4 frame format (id 3).
    Lz4,
    /// Zstandard (id 4).
    Zstd,
}

impl Compression {
    /// Every codec, in id order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec with this id (attributes bits 0–2); `None` for the undefined ids 5–7.
    pub fn from_id(id: u8) -> Option<Compression> {
        Compression::ALL.get(usize::from(id)).copied()
    }

    /// The codec's id, as stored in bits 0–2 of a batch's attributes.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Kafka's name for the codec (`compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Whether this build can compress and decompress with the codec (its cargo feature is on;
    /// always true for [`Compression::None`]).
    pub fn is_available(self) -> bool {
        match self {
            Compression::None => true,
            Compression::Gzip => cfg!(feature = "gzip"),
            Compression::Snappy => cfg!(feature = "snappy"),
            Compression::Lz4 => cfg!(feature = "lz4"),
            Compression::Zstd => cfg!(feature = "zstd"),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;

    /// Parses Kafka's names, ignoring case: `none`, `gzip`, `snappy`, `lz4`, `zstd`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Compression::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown compression {s:?}: expected none, gzip, snappy, lz4 or zstd")
            })
    }
}

/// The default cap on the decompressed size of one batch's records: 64 MiB. Far above what a
/// producer puts in one batch (Kafka's `batch.size` is 16 KiB and its largest request 1 MiB by
/// default), far below what would hurt a reader.
pub const DEFAULT_MAX_DECOMPRESSED_SIZE: usize = 64 << 20;

/// Why compressing or decompressing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressionError {
    /// The codec's cargo feature is off in this build of `staunch-core`.
    #[error("{0} compression is not available: staunch-core was built without its \"{0}\" feature")]
    Unavailable(Compression),
    /// The data expands to more than the caller's limit: a decompression bomb, or a batch larger
    /// than this reader accepts.
    #[error("{codec} data decompresses to more than the limit of {limit} bytes")]
    TooLarge {
        /// The codec.
        codec: Compression,
        /// The limit, in decompressed bytes.
        limit: usize,
    },
    /// The data is not valid for the codec (corrupt, truncated, or another format).
    #[error("{codec} data is corrupt: {reason}")]
    Corrupt {
        /// The codec.
        codec: Compression,
        /// What the decoder reported.
        reason: String,
    },
    /// The encoder failed (it does not for in-memory data in practice).
    #[error("{codec} compression failed: {reason}")]
    Compress {
        /// The codec.
        codec: Compression,
        /// What the encoder reported.
        reason: String,
    },
}

fn corrupt(codec: Compression, reason: impl fmt::Display) -> CompressionError {
    CompressionError::Corrupt {
        codec,
        reason: reason.to_string(),
    }
}

#[cfg_attr(
    not(any(
        feature = "gzip",
        feature = "snappy",
        feature = "lz4",
        feature = "zstd"
    )),
    allow(dead_code)
)]
fn compress_failed(codec: Compression, reason: impl fmt::Display) -> CompressionError {
    CompressionError::Compress {
        codec,
        reason: reason.to_string(),
    }
}

/// Compresses `data` (a batch's encoded records) with `codec`, in the framing Kafka's Java
/// client writes (see the module docs). [`Compression::None`] returns a copy.
pub fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, CompressionError> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        #[cfg(feature = "gzip")]
        Compression::Gzip => gzip::compress(data),
        #[cfg(feature = "snappy")]
        Compression::Snappy => snappy::compress(data),
        #[cfg(feature = "lz4")]
        Compression::Lz4 => lz4_frame::compress(data),
        #[cfg(feature = "zstd")]
        Compression::Zstd => zstd_frame::compress(data),
        #[allow(unreachable_patterns)]
        _ => Err(CompressionError::Unavailable(codec)),
    }
}

/// Decompresses `data` with `codec`, producing at most `limit` bytes: more fails with
/// [`CompressionError::TooLarge`], bad input with [`CompressionError::Corrupt`]. Never panics.
/// [`Compression::None`] returns a copy (also subject to the limit).
pub fn decompress(
    codec: Compression,
    data: &[u8],
    limit: usize,
) -> Result<Vec<u8>, CompressionError> {
    match codec {
        Compression::None if data.len() > limit => Err(CompressionError::TooLarge { codec, limit }),
        Compression::None => Ok(data.to_vec()),
        #[cfg(feature = "gzip")]
        Compression::Gzip => gzip::decompress(data, limit),
        #[cfg(feature = "snappy")]
        Compression::Snappy => snappy::decompress(data, limit),
        #[cfg(feature = "lz4")]
        Compression::Lz4 => lz4_frame::decompress(data, limit),
        #[cfg(feature = "zstd")]
        Compression::Zstd => zstd_frame::decompress(data, limit),
        #[allow(unreachable_patterns)]
        _ => Err(CompressionError::Unavailable(codec)),
    }
}

/// Reads `reader` to its end into a buffer that never exceeds `limit + 1` bytes: it grows as
/// data arrives (doubling from a small start, or from `hint`), so a reader that produces little
/// costs little and one that produces too much is stopped at the limit.
#[cfg_attr(
    not(any(feature = "gzip", feature = "lz4", feature = "zstd")),
    allow(dead_code)
)]
fn read_bounded(
    codec: Compression,
    mut reader: impl Read,
    limit: usize,
    hint: usize,
) -> Result<Vec<u8>, CompressionError> {
    let cap = limit.saturating_add(1);
    let mut out = vec![0u8; hint.clamp(4096, 1 << 20).min(cap)];
    let mut filled = 0;
    loop {
        if filled == out.len() {
            if filled >= cap {
                return Err(CompressionError::TooLarge { codec, limit });
            }
            out.resize(filled.saturating_mul(2).min(cap), 0);
        }
        match reader.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(codec, e)),
        }
    }
    if filled > limit {
        return Err(CompressionError::TooLarge { codec, limit });
    }
    out.truncate(filled);
    Ok(out)
}

#[cfg(feature = "gzip")]
mod gzip {
    use std::io::Write;

    use flate2::read::MultiGzDecoder;
    use flate2::write::GzEncoder;

    use super::{Compression, CompressionError, compress_failed, read_bounded};

    pub(super) fn compress(data: &[u8]) -> Result<Vec<u8>, CompressionError> {
        // Level 6, as java.util.zip's GZIPOutputStream (Deflater.DEFAULT_COMPRESSION).
        let mut encoder = GzEncoder::new(
            Vec::with_capacity(data.len() / 2 + 64),
            flate2::Compression::default(),
        );
        encoder
            .write_all(data)
            .and_then(|()| encoder.finish())
            .map_err(|e| compress_failed(Compression::Gzip, e))
    }

    pub(super) fn decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
        // Every member's CRC-32 and length trailer is checked; a truncated member is an error.
        read_bounded(
            Compression::Gzip,
            MultiGzDecoder::new(data),
            limit,
            data.len().saturating_mul(4),
        )
    }
}

#[cfg(feature = "snappy")]
mod snappy {
    use snap::raw::{Decoder, Encoder, decompress_len, max_compress_len};

    use super::{Compression, CompressionError, compress_failed, corrupt};

    /// snappy-java's stream magic; the header continues with version 1 and compatible
    /// version 1, both big-endian `i32`.
    const MAGIC: [u8; 8] = *b"\x82SNAPPY\x00";
    const HEADER: [u8; 16] = *b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
    /// snappy-java's `SnappyOutputStream` default block size.
    const BLOCK_SIZE: usize = 32 * 1024;

    pub(super) fn compress(data: &[u8]) -> Result<Vec<u8>, CompressionError> {
        let blocks = data.len().div_ceil(BLOCK_SIZE);
        let mut out = Vec::with_capacity(
            HEADER.len() + blocks * 4 + max_compress_len(data.len().min(BLOCK_SIZE)) * blocks,
        );
        out.extend_from_slice(&HEADER);
        let mut encoder = Encoder::new();
        let mut block = vec![0; max_compress_len(BLOCK_SIZE)];
        for chunk in data.chunks(BLOCK_SIZE) {
            // A chunk of at most 32 KiB always fits `max_compress_len(BLOCK_SIZE)`; snap fails
            // only for inputs over 4 GiB or a too-small output buffer.
            let n = encoder
                .compress(chunk, &mut block)
                .map_err(|e| compress_failed(Compression::Snappy, e))?;
            out.extend_from_slice(&(n as u32).to_be_bytes());
            out.extend_from_slice(&block[..n]);
        }
        Ok(out)
    }

    pub(super) fn decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
        if data.len() >= HEADER.len() && data[..MAGIC.len()] == MAGIC {
            xerial(data, limit)
        } else {
            // Plain raw snappy, without framing: librdkafka and older clients' format.
            let mut out = Vec::new();
            raw_block(data, limit, &mut out)?;
            Ok(out)
        }
    }

    /// Appends the raw snappy block `block` to `out`, checking its declared length against
    /// what is left of `limit` before allocating for it.
    fn raw_block(block: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), CompressionError> {
        let codec = Compression::Snappy;
        let len = decompress_len(block).map_err(|e| corrupt(codec, e))?;
        if len > limit.saturating_sub(out.len()) {
            return Err(CompressionError::TooLarge { codec, limit });
        }
        let start = out.len();
        out.resize(start + len, 0);
        let n = Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|e| corrupt(codec, e))?;
        out.truncate(start + n);
        Ok(())
    }

    /// snappy-java's stream: the header, then length-prefixed blocks. A stream may be followed
    /// by another (snappy-java reads concatenated streams): a second header is skipped. Its
    /// first byte, 0x82, can never start a block length (that would be over 2 GiB).
    fn xerial(data: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
        let codec = Compression::Snappy;
        let mut rest = &data[HEADER.len()..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            if rest.len() >= MAGIC.len() && rest[..MAGIC.len()] == MAGIC {
                if rest.len() < HEADER.len() {
                    return Err(corrupt(codec, "truncated xerial stream header"));
                }
                rest = &rest[HEADER.len()..];
                continue;
            }
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return Err(corrupt(codec, "truncated xerial block length"));
            };
            let len = u32::from_be_bytes(*len) as usize;
            if tail.len() < len {
                return Err(corrupt(
                    codec,
                    format!(
                        "xerial block of {len} bytes, only {} bytes left",
                        tail.len()
                    ),
                ));
            }
            let (block, after) = tail.split_at(len);
            raw_block(block, limit, &mut out)?;
            rest = after;
        }
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Bytes the Java client writes for one record with value "sdfdsf" (from the
        /// `kafka-protocol` crate's tests, which took them from a real Kafka producer).
        const JAVA: &[u8] = b"\x82\x53\x4e\x41\x50\x50\x59\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x0f\x0d\x30\x18\x00\x00\x00\x01\x0csdfdsf\x00";
        const PLAIN: &[u8] = b"\x18\x00\x00\x00\x01\x0csdfdsf\x00";

        #[test]
        fn matches_the_java_client_byte_for_byte() {
            assert_eq!(compress(PLAIN).unwrap(), JAVA);
            assert_eq!(decompress(JAVA, 1024).unwrap(), PLAIN);
        }

        #[test]
        fn reads_raw_snappy_and_concatenated_streams() {
            let raw = Encoder::new().compress_vec(&[7u8; 5000]).unwrap();
            assert!(raw.len() >= 16);
            assert_eq!(decompress(&raw, 5000).unwrap(), vec![7u8; 5000]);
            let mut twice = JAVA.to_vec();
            twice.extend_from_slice(JAVA);
            let mut expected = PLAIN.to_vec();
            expected.extend_from_slice(PLAIN);
            assert_eq!(decompress(&twice, 1024).unwrap(), expected);
        }
    }
}

#[cfg(feature = "lz4")]
mod lz4_frame {
    use std::io::Write;

    use lz4::liblz4::BlockChecksum;
    use lz4::{BlockMode, BlockSize, ContentChecksum, Decoder, EncoderBuilder};

    use super::{Compression, CompressionError, compress_failed, corrupt, read_bounded};

    pub(super) fn compress(data: &[u8]) -> Result<Vec<u8>, CompressionError> {
        let failed = |e| compress_failed(Compression::Lz4, e);
        // As the Java client's Lz4BlockOutputStream: 64 KiB independent blocks, no checksums
        // (the batch CRC covers the bytes), a correct header checksum. Level 0: LZ4's fast mode.
        let mut encoder = EncoderBuilder::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(BlockMode::Independent)
            .checksum(ContentChecksum::NoChecksum)
            .block_checksum(BlockChecksum::NoBlockChecksum)
            .level(0)
            .build(Vec::with_capacity(data.len() / 2 + 64))
            .map_err(failed)?;
        encoder.write_all(data).map_err(failed)?;
        let (out, finished) = encoder.finish();
        finished.map_err(failed)?;
        Ok(out)
    }

    pub(super) fn decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
        let codec = Compression::Lz4;
        let mut decoder = Decoder::new(data).map_err(|e| corrupt(codec, e))?;
        let out = read_bounded(codec, &mut decoder, limit, data.len().saturating_mul(4))?;
        // The decoder reports a frame cut short only here.
        let (_, finished) = decoder.finish();
        finished.map_err(|_| corrupt(codec, "the LZ4 frame is truncated"))?;
        Ok(out)
    }
}

#[cfg(feature = "zstd")]
mod zstd_frame {
    use zstd::stream::read::Decoder;

    use super::{Compression, CompressionError, compress_failed, corrupt, read_bounded};

    /// Level 3: zstd's default, and the Java client's.
    const LEVEL: i32 = 3;
    /// Largest window a frame may ask for: 2^27 bytes, zstd's default limit.
    const WINDOW_LOG_MAX: u32 = 27;

    pub(super) fn compress(data: &[u8]) -> Result<Vec<u8>, CompressionError> {
        zstd::bulk::compress(data, LEVEL).map_err(|e| compress_failed(Compression::Zstd, e))
    }

    pub(super) fn decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
        let codec = Compression::Zstd;
        let mut decoder = Decoder::with_buffer(data).map_err(|e| corrupt(codec, e))?;
        decoder
            .window_log_max(WINDOW_LOG_MAX)
            .map_err(|e| corrupt(codec, e))?;
        // A truncated frame is reported by the decoder as an "incomplete frame" read error.
        read_bounded(codec, decoder, limit, data.len().saturating_mul(4))
    }
}

/// Needs every codec: `cargo test --no-default-features` runs only `without_codecs`.
#[cfg(all(
    test,
    feature = "gzip",
    feature = "snappy",
    feature = "lz4",
    feature = "zstd"
))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CODECS: [Compression; 4] = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivially so.
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 1000) as u8)
            .collect()
    }

    #[test]
    fn names_ids_and_parsing_agree() {
        for codec in Compression::ALL {
            assert_eq!(Compression::from_id(codec.id()), Some(codec));
            assert_eq!(codec.name().parse::<Compression>(), Ok(codec));
            assert_eq!(codec.to_string().to_uppercase().parse(), Ok(codec));
            assert!(codec.is_available());
            let toml = format!("c = \"{codec}\"");
            #[derive(Deserialize)]
            struct C {
                c: Compression,
            }
            assert_eq!(toml::from_str::<C>(&toml).unwrap().c, codec);
        }
        for id in 5..=7 {
            assert_eq!(Compression::from_id(id), None);
        }
        assert!("brotli".parse::<Compression>().is_err());
    }

    #[test]
    fn every_codec_round_trips_empty_small_and_multi_block_data() {
        for codec in CODECS {
            for len in [0, 1, 100, 32 * 1024, 32 * 1024 + 1, 200_000] {
                let data = sample(len);
                let packed = compress(codec, &data).unwrap();
                if len >= 32 * 1024 {
                    assert!(packed.len() < data.len(), "{codec} did not compress");
                }
                assert_eq!(
                    decompress(codec, &packed, len).unwrap(),
                    data,
                    "{codec} {len}"
                );
            }
        }
    }

    #[test]
    fn output_above_the_limit_is_refused_for_every_codec() {
        for codec in Compression::ALL {
            let data = sample(10_000);
            let packed = compress(codec, &data).unwrap();
            assert_eq!(decompress(codec, &packed, 10_000).unwrap(), data);
            assert_eq!(
                decompress(codec, &packed, 9_999),
                Err(CompressionError::TooLarge {
                    codec,
                    limit: 9_999
                }),
                "{codec}"
            );
        }
    }

    /// 80 MiB of zeros compress to a few hundred KiB (gzip, lz4, snappy) or a few KiB (zstd):
    /// decompressing with the default limit stops at 64 MiB with a clear error.
    #[test]
    fn decompression_bombs_stop_at_the_limit() {
        let zeros = vec![0u8; 80 << 20];
        for codec in CODECS {
            let bomb = compress(codec, &zeros).unwrap();
            assert!(bomb.len() < 8 << 20, "{codec}: {} bytes", bomb.len());
            let err = decompress(codec, &bomb, DEFAULT_MAX_DECOMPRESSED_SIZE).unwrap_err();
            assert_eq!(
                err,
                CompressionError::TooLarge {
                    codec,
                    limit: DEFAULT_MAX_DECOMPRESSED_SIZE
                }
            );
            assert!(err.to_string().contains("more than the limit"), "{err}");
        }
    }

    /// A raw snappy block that claims a 4 GiB output is refused before anything is allocated.
    #[test]
    fn a_lying_snappy_length_allocates_nothing() {
        // varint 0xFFFFFFFF, then one literal.
        let lie = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, b'x'];
        assert!(matches!(
            decompress(Compression::Snappy, &lie, 1 << 20),
            Err(CompressionError::TooLarge { .. })
        ));
        let mut xerial = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        xerial.extend_from_slice(&(lie.len() as u32).to_be_bytes());
        xerial.extend_from_slice(&lie);
        assert!(matches!(
            decompress(Compression::Snappy, &xerial, 1 << 20),
            Err(CompressionError::TooLarge { .. })
        ));
    }

    #[test]
    fn truncated_and_garbage_inputs_are_errors() {
        let data = sample(100_000);
        for codec in CODECS {
            let packed = compress(codec, &data).unwrap();
            for cut in [1, 2, 5, 16, packed.len() / 2, packed.len() - 1] {
                let result = decompress(codec, &packed[..packed.len() - cut], data.len());
                assert!(
                    matches!(result, Err(CompressionError::Corrupt { .. })),
                    "{codec} cut by {cut}: {result:?}"
                );
            }
            let garbage = b"this is not compressed by anything at all, really";
            assert!(
                matches!(
                    decompress(codec, garbage, 1 << 20),
                    Err(CompressionError::Corrupt { .. })
                ),
                "{codec}"
            );
        }
    }

    #[test]
    fn corrupted_bytes_never_panic_and_never_pass_silently_for_checksummed_codecs() {
        let data = sample(20_000);
        for codec in CODECS {
            let packed = compress(codec, &data).unwrap();
            for at in (0..packed.len()).step_by(packed.len() / 97 + 1) {
                let mut bad = packed.clone();
                bad[at] ^= 0x5a;
                let result = decompress(codec, &bad, data.len() * 2);
                // gzip carries a CRC-32 of the content; the others may decode to other bytes
                // (the batch CRC catches that before anyone decompresses).
                if codec == Compression::Gzip {
                    assert!(result.as_deref() != Ok(&data[..]), "gzip flip at {at}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn round_trip(
            codec in proptest::sample::select(CODECS.to_vec()),
            data in proptest::collection::vec(any::<u8>(), 0..5_000),
            repeat in 1usize..20,
        ) {
            let data: Vec<u8> = data.iter().copied().cycle().take(data.len() * repeat).collect();
            let packed = compress(codec, &data).unwrap();
            prop_assert_eq!(decompress(codec, &packed, data.len()).unwrap(), data);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            codec in proptest::sample::select(Compression::ALL.to_vec()),
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            prefix in any::<bool>(),
        ) {
            // With a valid stream header in front, the decoders get past their magic checks.
            let mut input = if prefix { compress(codec, b"").unwrap() } else { Vec::new() };
            if prefix && codec != Compression::None {
                // Keep only the header part of an empty stream.
                input.truncate(match codec { Compression::Snappy => 16, Compression::Lz4 => 7, _ => 4 });
            }
            input.extend_from_slice(&bytes);
            if let Ok(out) = decompress(codec, &input, 4096) {
                prop_assert!(out.len() <= 4096);
            }
        }
    }
}

#[cfg(all(test, not(feature = "zstd")))]
mod without_codecs {
    use super::*;

    #[test]
    fn a_codec_that_is_off_is_unavailable_in_both_directions() {
        assert!(!Compression::Zstd.is_available());
        assert_eq!(
            compress(Compression::Zstd, b"x"),
            Err(CompressionError::Unavailable(Compression::Zstd))
        );
        assert_eq!(
            decompress(Compression::Zstd, b"x", 10),
            Err(CompressionError::Unavailable(Compression::Zstd))
        );
        assert_eq!(compress(Compression::None, b"x").unwrap(), b"x");
        let bytes = crate::BatchBuilder::new(0)
            .compression(Compression::Zstd)
            .record(None, Some(b"v"))
            .build();
        let batch = crate::RecordBatch::parse(&bytes).unwrap();
        assert_eq!(
            batch.compression(),
            Some(Compression::None),
            "built uncompressed"
        );
        assert!(
            crate::BatchBuilder::new(0)
                .compression(Compression::Zstd)
                .try_build()
                .is_err()
        );
    }
}
