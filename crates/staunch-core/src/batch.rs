//! A zero-copy view over Kafka's v2 record batch ("magic 2"), the unit Staunch stores.
//!
//! The bytes a producer sends are the bytes Staunch writes to disk and the bytes a consumer
//! fetches. The broker touches only two fields, both of which lie *outside* the CRC: the base
//! offset (assigned by the log) and the partition leader epoch (stamped by the leader). Everything
//! else is validated and left alone.
//!
//! Layout (big-endian), as in Apache Kafka's `DefaultRecordBatch`:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | base offset |
//! | 8 | 4 | batch length (bytes after this field) |
//! | 12 | 4 | partition leader epoch |
//! | 16 | 1 | magic (2) |
//! | 17 | 4 | CRC-32C of bytes 21.. end |
//! | 21 | 2 | attributes (compression, timestamp type, transactional, control) |
//! | 23 | 4 | last offset delta |
//! | 27 | 8 | base (first) timestamp |
//! | 35 | 8 | max timestamp |
//! | 43 | 8 | producer id |
//! | 51 | 2 | producer epoch |
//! | 53 | 4 | base sequence |
//! | 57 | 4 | record count |
//! | 61 | … | records |

use std::borrow::Cow;

pub use crate::compression::Compression;
use crate::compression::{CompressionError, DEFAULT_MAX_DECOMPRESSED_SIZE, compress, decompress};
use crate::ids::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};
use crate::varint::{get_varint, get_varlong, put_varlong};

/// Bytes the zig-zag varint encoding of `value` takes (as [`put_varlong`] writes it).
fn varlong_len(value: i64) -> usize {
    let v = ((value << 1) ^ (value >> 63)) as u64;
    // One byte per started group of 7 bits; zero still takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = BASE_OFFSET + 8;
const PARTITION_LEADER_EPOCH: usize = BATCH_LENGTH + 4;
const MAGIC: usize = PARTITION_LEADER_EPOCH + 4;
const CRC: usize = MAGIC + 1;
const ATTRIBUTES: usize = CRC + 4;
const LAST_OFFSET_DELTA: usize = ATTRIBUTES + 2;
const BASE_TIMESTAMP: usize = LAST_OFFSET_DELTA + 4;
const MAX_TIMESTAMP: usize = BASE_TIMESTAMP + 8;
const PRODUCER_ID: usize = MAX_TIMESTAMP + 8;
const PRODUCER_EPOCH: usize = PRODUCER_ID + 8;
const BASE_SEQUENCE: usize = PRODUCER_EPOCH + 2;
const RECORD_COUNT: usize = BASE_SEQUENCE + 4;

/// Size of the fixed batch header; the records start here.
pub const HEADER_SIZE: usize = RECORD_COUNT + 4;
/// Bytes before the batch-length field counts (base offset + batch length): a batch occupies
/// `LOG_OVERHEAD + batch_length` bytes.
pub const LOG_OVERHEAD: usize = BATCH_LENGTH + 4;
/// The only record-batch format Staunch accepts.
pub const MAGIC_V2: i8 = 2;

/// Why some bytes are not a valid v2 record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than a batch header, or than the batch length claims.
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the header or length field requires.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The batch-length field is smaller than a header or negative.
    #[error("record batch length {0} is invalid")]
    InvalidLength(i32),
    /// The batch is larger than the caller allows.
    #[error("record batch of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the batch in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Not magic 2 (Staunch does not store the legacy v0/v1 message sets).
    #[error("unsupported record batch magic {0} (only magic 2 is supported)")]
    UnsupportedMagic(i8),
    /// The CRC-32C over attributes..end does not match the stored one.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// Header fields contradict each other or the records (count, offset delta, record framing).
    #[error("record batch is malformed: {0}")]
    Malformed(&'static str),
    /// The records of a compressed batch cannot be decompressed: corrupt, larger than the
    /// reader's limit, or a codec this build lacks.
    #[error("record batch records cannot be decompressed: {0}")]
    Compression(#[from] CompressionError),
}

/// A borrowed view over exactly one v2 record batch.
///
/// [`RecordBatch::parse`] checks only that the header is present and the length field fits;
/// [`RecordBatch::validate`] checks everything else. Accessors never panic on a parsed view.
#[derive(Debug, Clone, Copy)]
pub struct RecordBatch<'a> {
    bytes: &'a [u8],
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(raw)
}

impl<'a> RecordBatch<'a> {
    /// Reads the size of the batch at the front of `bytes` from its length field, without
    /// checking anything else. `None` if fewer than [`LOG_OVERHEAD`] bytes are present.
    pub fn peek_size(bytes: &[u8]) -> Option<Result<usize, BatchError>> {
        if bytes.len() < LOG_OVERHEAD {
            return None;
        }
        let length = be_i32(bytes, BATCH_LENGTH);
        if length < (HEADER_SIZE - LOG_OVERHEAD) as i32 {
            return Some(Err(BatchError::InvalidLength(length)));
        }
        Some(Ok(LOG_OVERHEAD + length as usize))
    }

    /// Views the batch at the front of `bytes`; the batch is `bytes[..view.size()]` and any bytes
    /// after it are ignored. Fails if the header is incomplete, the length field is invalid, or
    /// `bytes` is shorter than the length claims.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BatchError> {
        let size = match Self::peek_size(bytes) {
            None => {
                return Err(BatchError::Truncated {
                    needed: HEADER_SIZE,
                    available: bytes.len(),
                });
            }
            Some(size) => size?,
        };
        if bytes.len() < size {
            return Err(BatchError::Truncated {
                needed: size,
                available: bytes.len(),
            });
        }
        Ok(Self {
            bytes: &bytes[..size],
        })
    }

    /// The batch's bytes, exactly as stored.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Total size in bytes, header included.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> Offset {
        be_i64(self.bytes, BASE_OFFSET)
    }

    /// The batch-length field: bytes after it.
    pub fn batch_length(&self) -> i32 {
        be_i32(self.bytes, BATCH_LENGTH)
    }

    /// Epoch of the leader that appended the batch (`-1` before a leader stamped it).
    pub fn partition_leader_epoch(&self) -> LeaderEpoch {
        be_i32(self.bytes, PARTITION_LEADER_EPOCH)
    }

    /// The format version; 2 for every batch Staunch accepts.
    pub fn magic(&self) -> i8 {
        self.bytes[MAGIC] as i8
    }

    /// The CRC-32C stored in the header.
    pub fn crc(&self) -> u32 {
        be_i32(self.bytes, CRC) as u32
    }

    /// The raw attributes field.
    pub fn attributes(&self) -> i16 {
        be_i16(self.bytes, ATTRIBUTES)
    }

    /// The compression codec, or `None` for an undefined codec value (5–7).
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_id((self.attributes() & 0x07) as u8)
    }

    /// Whether timestamps are the broker's append time (true) or the producer's create time.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & 0x08 != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & 0x10 != 0
    }

    /// Whether the batch is a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes() & 0x20 != 0
    }

    /// Offset delta of the last record: the batch covers `base_offset ..= base_offset + delta`.
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.bytes, LAST_OFFSET_DELTA)
    }

    /// Offset of the last record. The base offset is not covered by the CRC and may hold
    /// anything before the log stamps it, so the sum wraps instead of panicking.
    pub fn last_offset(&self) -> Offset {
        self.base_offset()
            .wrapping_add(i64::from(self.last_offset_delta()))
    }

    /// Offset after the last record: where the next batch starts (wrapping, as `last_offset`).
    pub fn next_offset(&self) -> Offset {
        self.last_offset().wrapping_add(1)
    }

    /// Timestamp of the first record (ms since the epoch).
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.bytes, BASE_TIMESTAMP)
    }

    /// Largest record timestamp in the batch (ms since the epoch).
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.bytes, MAX_TIMESTAMP)
    }

    /// Producer id, `-1` for a non-idempotent producer.
    pub fn producer_id(&self) -> ProducerId {
        be_i64(self.bytes, PRODUCER_ID)
    }

    /// Producer epoch, `-1` for a non-idempotent producer.
    pub fn producer_epoch(&self) -> ProducerEpoch {
        be_i16(self.bytes, PRODUCER_EPOCH)
    }

    /// Sequence number of the first record, `-1` for a non-idempotent producer.
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.bytes, BASE_SEQUENCE)
    }

    /// Number of records the header claims.
    pub fn record_count(&self) -> i32 {
        be_i32(self.bytes, RECORD_COUNT)
    }

    /// CRC-32C over attributes .. end, as the header's CRC should be.
    pub fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&self.bytes[ATTRIBUTES..])
    }

    /// Checks everything a broker must check before storing or serving the batch: magic 2, a
    /// CRC-32C that matches, a defined compression codec, a positive record count consistent with
    /// the last offset delta, and — for uncompressed batches — records that are framed correctly,
    /// number exactly `record_count` and fill the batch exactly.
    pub fn validate(&self) -> Result<(), BatchError> {
        self.verify_integrity()?;
        let count = self.record_count();
        if self.compression() == Some(Compression::None) {
            let mut seen = 0i32;
            for record in self.records()? {
                record?;
                seen += 1;
            }
            if seen != count {
                return Err(BatchError::Malformed("record count does not match records"));
            }
        }
        Ok(())
    }

    /// The checks that need no record decoding: magic 2, a matching CRC-32C, a defined codec and
    /// a record count consistent with the last offset delta. Recovery and reads use this; appends
    /// use the full [`RecordBatch::validate`].
    pub fn verify_integrity(&self) -> Result<(), BatchError> {
        if self.magic() != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(self.magic()));
        }
        let computed = self.compute_crc();
        if computed != self.crc() {
            return Err(BatchError::CrcMismatch {
                stored: self.crc(),
                computed,
            });
        }
        if self.compression().is_none() {
            return Err(BatchError::Malformed("undefined compression codec"));
        }
        let count = self.record_count();
        if count <= 0 || self.last_offset_delta() != count - 1 {
            return Err(BatchError::Malformed(
                "record count does not match the last offset delta",
            ));
        }
        Ok(())
    }

    /// The records section as stored: everything after the header, compressed if the batch is.
    pub fn records_section(&self) -> &'a [u8] {
        &self.bytes[HEADER_SIZE..]
    }

    /// Iterates the records of an uncompressed batch, borrowing them from the batch bytes.
    /// Fails for compressed batches (use [`RecordBatch::decompressed`], which reads both); each
    /// item fails if a record's framing is broken.
    pub fn records(&self) -> Result<Records<'a>, BatchError> {
        if self.compression() != Some(Compression::None) {
            return Err(BatchError::Malformed(
                "records of a compressed batch cannot be read without decompressing",
            ));
        }
        Ok(self.records_in(self.records_section()))
    }

    /// The records section ready to iterate, whatever the codec: borrowed from the batch (no
    /// copy) when it is uncompressed, decompressed into an owned buffer otherwise. At most
    /// [`DEFAULT_MAX_DECOMPRESSED_SIZE`] (64 MiB) of decompressed records are accepted; a batch
    /// that expands further fails with [`CompressionError::TooLarge`] (see
    /// [`RecordBatch::decompressed_with_limit`]).
    ///
    /// ```
    /// use staunch_core::batch::{BatchBuilder, Compression, RecordBatch};
    ///
    /// let bytes = BatchBuilder::new(0)
    ///     .compression(Compression::Zstd)
    ///     .record(Some(b"k"), Some(b"v"))
    ///     .build();
    /// let batch = RecordBatch::parse(&bytes).unwrap();
    /// let records = batch.decompressed().unwrap();
    /// for record in records.records() {
    ///     assert_eq!(record.unwrap().value, Some(&b"v"[..]));
    /// }
    /// ```
    pub fn decompressed(&self) -> Result<Decompressed<'a>, BatchError> {
        self.decompressed_with_limit(DEFAULT_MAX_DECOMPRESSED_SIZE)
    }

    /// As [`RecordBatch::decompressed`], with at most `limit` bytes of decompressed records.
    /// The limit bounds the memory one batch can make a reader allocate, whatever its bytes
    /// claim; it does not apply to uncompressed batches, which are never copied.
    pub fn decompressed_with_limit(&self, limit: usize) -> Result<Decompressed<'a>, BatchError> {
        let codec = self
            .compression()
            .ok_or(BatchError::Malformed("undefined compression codec"))?;
        let records = match codec {
            Compression::None => Cow::Borrowed(self.records_section()),
            codec => Cow::Owned(decompress(codec, self.records_section(), limit)?),
        };
        Ok(Decompressed {
            records,
            base_offset: self.base_offset(),
            base_timestamp: self.base_timestamp(),
            log_append_time: self.is_log_append_time().then(|| self.max_timestamp()),
            count: self.record_count().max(0),
        })
    }

    fn records_in<'r>(&self, section: &'r [u8]) -> Records<'r> {
        Records {
            rest: section,
            base_offset: self.base_offset(),
            base_timestamp: self.base_timestamp(),
            log_append_time: self.is_log_append_time().then(|| self.max_timestamp()),
            remaining: self.record_count().max(0),
            failed: false,
        }
    }

    /// Writes `base_offset` into the batch at the front of `bytes`. The field lies outside the
    /// CRC, so the batch stays valid.
    pub fn set_base_offset(bytes: &mut [u8], base_offset: Offset) -> Result<(), BatchError> {
        RecordBatch::parse(bytes)?;
        bytes[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
        Ok(())
    }

    /// Writes the partition leader epoch into the batch at the front of `bytes`. The field lies
    /// outside the CRC, so the batch stays valid.
    pub fn set_partition_leader_epoch(
        bytes: &mut [u8],
        epoch: LeaderEpoch,
    ) -> Result<(), BatchError> {
        RecordBatch::parse(bytes)?;
        bytes[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4]
            .copy_from_slice(&epoch.to_be_bytes());
        Ok(())
    }

    /// Writes the producer id, epoch and base sequence into the batch at the front of `bytes`
    /// and recomputes its CRC (these fields are covered by it). The records, compressed or not,
    /// are left untouched — this is how a producer re-stamps a batch it built after its producer
    /// id changed. It is never done to a batch someone else built: the broker stores batches
    /// as sent.
    pub fn set_producer(
        bytes: &mut [u8],
        id: ProducerId,
        epoch: ProducerEpoch,
        base_sequence: i32,
    ) -> Result<(), BatchError> {
        let size = RecordBatch::parse(bytes)?.size();
        bytes[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&id.to_be_bytes());
        bytes[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
        bytes[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES..size]);
        bytes[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }
}

/// The records section of one batch, ready to iterate: borrowed from the batch when it was
/// stored uncompressed (zero-copy), decompressed into a buffer of its own otherwise. Made by
/// [`RecordBatch::decompressed`].
#[derive(Debug, Clone)]
pub struct Decompressed<'a> {
    records: Cow<'a, [u8]>,
    base_offset: Offset,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    count: i32,
}

impl Decompressed<'_> {
    /// Iterates the records; each item fails if a record's framing is broken, and the
    /// iteration ends after the batch's record count (extra bytes after it are an error).
    pub fn records(&self) -> Records<'_> {
        Records {
            rest: &self.records,
            base_offset: self.base_offset,
            base_timestamp: self.base_timestamp,
            log_append_time: self.log_append_time,
            remaining: self.count,
            failed: false,
        }
    }

    /// The uncompressed records section.
    pub fn as_bytes(&self) -> &[u8] {
        &self.records
    }

    /// Whether the records are borrowed from the batch (it was not compressed) rather than
    /// decompressed into a buffer of their own.
    pub fn is_borrowed(&self) -> bool {
        matches!(self.records, Cow::Borrowed(_))
    }
}

/// Iterates over a concatenation of batches (a produce request's records, a fetched chunk, a
/// segment file), yielding each batch or the first framing error, after which it stops.
pub fn batches(bytes: &[u8]) -> Batches<'_> {
    Batches { rest: bytes }
}

/// Iterator returned by [`batches`].
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<RecordBatch<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match RecordBatch::parse(self.rest) {
            Ok(batch) => {
                self.rest = &self.rest[batch.size()..];
                Some(Ok(batch))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// One record of an uncompressed batch, borrowed from the batch bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Absolute offset (batch base offset + offset delta).
    pub offset: Offset,
    /// Absolute timestamp in ms (the batch's max timestamp under log-append time).
    pub timestamp: i64,
    /// Key, `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// Value, `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// Headers in order; a header value may be null.
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// Iterator over the records of an uncompressed batch; see [`RecordBatch::records`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    base_offset: Offset,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    remaining: i32,
    failed: bool,
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Result<i32, BatchError> {
        let (v, n) = get_varint(self.buf).ok_or(BatchError::Malformed("bad varint in record"))?;
        self.buf = &self.buf[n..];
        Ok(v)
    }
    fn varlong(&mut self) -> Result<i64, BatchError> {
        let (v, n) = get_varlong(self.buf).ok_or(BatchError::Malformed("bad varlong in record"))?;
        self.buf = &self.buf[n..];
        Ok(v)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        if self.buf.len() < n {
            return Err(BatchError::Malformed("record field runs past its record"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        let len = self.varint()?;
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(BatchError::Malformed("negative length in record")),
            n => self.take(n as usize).map(Some),
        }
    }
}

impl<'a> Records<'a> {
    fn next_record(&mut self) -> Result<Record<'a>, BatchError> {
        let mut outer = Cursor { buf: self.rest };
        let length = outer.varint()?;
        if length < 0 {
            return Err(BatchError::Malformed("negative record length"));
        }
        let body = outer.take(length as usize)?;
        self.rest = outer.buf;
        let mut c = Cursor { buf: body };
        let _attributes = c.take(1)?;
        let timestamp_delta = c.varlong()?;
        let offset_delta = c.varint()?;
        let key = c.nullable_bytes()?;
        let value = c.nullable_bytes()?;
        let header_count = c.varint()?;
        if header_count < 0 {
            return Err(BatchError::Malformed("negative header count"));
        }
        // Every header takes at least two bytes, which bounds the allocation by the record size.
        if header_count as usize > c.buf.len() / 2 {
            return Err(BatchError::Malformed("header count exceeds record size"));
        }
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let key = c
                .nullable_bytes()?
                .ok_or(BatchError::Malformed("null header key"))?;
            let value = c.nullable_bytes()?;
            headers.push((key, value));
        }
        if !c.buf.is_empty() {
            return Err(BatchError::Malformed("record has trailing bytes"));
        }
        Ok(Record {
            offset: self.base_offset.wrapping_add(i64::from(offset_delta)),
            timestamp: self
                .log_append_time
                .unwrap_or(self.base_timestamp.wrapping_add(timestamp_delta)),
            key,
            value,
            headers,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.remaining == 0 {
            if self.rest.is_empty() {
                return None;
            }
            self.failed = true;
            return Some(Err(BatchError::Malformed(
                "bytes after the last record of the batch",
            )));
        }
        self.remaining -= 1;
        let item = self.next_record();
        self.failed = item.is_err();
        Some(item)
    }
}

/// Builds a v2 batch as a producer sends it (base offset 0, leader epoch -1), uncompressed or
/// compressed with any of Kafka's codecs ([`BatchBuilder::compression`]). Records are encoded
/// as they are added, after room for the batch header; compression runs once, in
/// [`BatchBuilder::build`]. An uncompressed batch is built in place: the header is filled in
/// and the records are not copied again.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    base_timestamp: i64,
    max_timestamp: i64,
    producer: (ProducerId, ProducerEpoch, i32),
    compression: Compression,
    /// [`HEADER_SIZE`] bytes left for the header, then the encoded records.
    buffer: Vec<u8>,
    count: i32,
}

impl BatchBuilder {
    /// An empty batch whose first record has timestamp `base_timestamp` (ms).
    pub fn new(base_timestamp: i64) -> Self {
        Self {
            base_timestamp,
            max_timestamp: base_timestamp,
            producer: (-1, -1, -1),
            compression: Compression::None,
            buffer: vec![0; HEADER_SIZE],
            count: 0,
        }
    }

    /// Compresses the records with `codec` when the batch is built (default
    /// [`Compression::None`]).
    pub fn compression(mut self, codec: Compression) -> Self {
        self.compression = codec;
        self
    }

    /// Marks the batch as sent by idempotent producer `id` / `epoch`, first sequence `base_sequence`.
    pub fn producer(mut self, id: ProducerId, epoch: ProducerEpoch, base_sequence: i32) -> Self {
        self.producer = (id, epoch, base_sequence);
        self
    }

    /// Adds a record with the batch's base timestamp.
    pub fn record(self, key: Option<&[u8]>, value: Option<&[u8]>) -> Self {
        let ts = self.base_timestamp;
        self.record_at(ts, key, value, &[])
    }

    /// Adds a record with its own timestamp and headers.
    pub fn record_at(
        mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> Self {
        self.push(timestamp, key, value, headers.iter().copied());
        self
    }

    /// Appends a record in place, with its own timestamp and headers (a header value may be
    /// null): [`BatchBuilder::record_at`] taking `&mut self` and the headers as any
    /// re-iterable sequence of pairs. Writes straight into the batch buffer: no per-record
    /// allocation beyond the buffer's own growth. A producer that keeps headers in its own
    /// type borrows them without building a slice first.
    pub fn push<'h, I>(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: I,
    ) where
        I: IntoIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
        I::IntoIter: Clone,
    {
        fn bytes_len(b: Option<&[u8]>) -> usize {
            match b {
                None => varlong_len(-1),
                Some(b) => varlong_len(b.len() as i64) + b.len(),
            }
        }
        fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
            match b {
                None => put_varlong(out, -1),
                Some(b) => {
                    put_varlong(out, b.len() as i64);
                    out.extend_from_slice(b);
                }
            }
        }
        let headers = headers.into_iter();
        let timestamp_delta = timestamp - self.base_timestamp;
        let offset_delta = i64::from(self.count);
        let (header_count, header_bytes) =
            headers.clone().fold((0usize, 0usize), |(n, size), (k, v)| {
                (n + 1, size + bytes_len(Some(k)) + bytes_len(v))
            });
        let body_len = 1
            + varlong_len(timestamp_delta)
            + varlong_len(offset_delta)
            + bytes_len(key)
            + bytes_len(value)
            + varlong_len(header_count as i64)
            + header_bytes;
        self.buffer.reserve(varlong_len(body_len as i64) + body_len);
        put_varlong(&mut self.buffer, body_len as i64);
        self.buffer.push(0); // record attributes: unused
        put_varlong(&mut self.buffer, timestamp_delta);
        put_varlong(&mut self.buffer, offset_delta);
        put_bytes(&mut self.buffer, key);
        put_bytes(&mut self.buffer, value);
        put_varlong(&mut self.buffer, header_count as i64);
        for (k, v) in headers {
            put_bytes(&mut self.buffer, Some(k));
            put_bytes(&mut self.buffer, v);
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
    }

    /// The size in bytes of the batch so far *before compression*, header included: what a
    /// producer compares with its batch size limit. For an uncompressed batch it is exactly
    /// what [`BatchBuilder::build`] produces; a compressed one is usually smaller.
    pub fn encoded_len(&self) -> usize {
        self.buffer.len()
    }

    /// Number of records added so far.
    pub fn len(&self) -> i32 {
        self.count
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encodes the batch, compressing its records with the chosen codec, CRC included. A batch
    /// with no records is encoded as such (and fails validation), so tests can build one on
    /// purpose.
    ///
    /// Never fails: should the codec fail (it is not compiled in — see
    /// [`crate::compression`]'s feature flags), the batch is built uncompressed instead, which
    /// every reader reads the same. Use [`BatchBuilder::try_build`] to get the error instead.
    pub fn build(self) -> Vec<u8> {
        match self.compression {
            Compression::None => self.uncompressed(),
            codec => match compress(codec, &self.buffer[HEADER_SIZE..]) {
                Ok(records) => self.compressed(codec, &records),
                Err(_) => self.uncompressed(),
            },
        }
    }

    /// As [`BatchBuilder::build`], but fails if the codec does.
    pub fn try_build(self) -> Result<Vec<u8>, CompressionError> {
        match self.compression {
            Compression::None => Ok(self.uncompressed()),
            codec => {
                let records = compress(codec, &self.buffer[HEADER_SIZE..])?;
                Ok(self.compressed(codec, &records))
            }
        }
    }

    /// The batch with its records as encoded: the header filled in before them, in place.
    /// The buffer's spare capacity (up to its length again, from growing) is given back, so
    /// a batch held a while (in flight, or waiting for a retry) takes what its bytes take.
    fn uncompressed(mut self) -> Vec<u8> {
        let mut buffer = std::mem::take(&mut self.buffer);
        self.fill_header(Compression::None, &mut buffer);
        buffer.shrink_to_fit();
        buffer
    }

    /// The batch with `records` (compressed with `codec`) after the header, in a buffer of
    /// exactly that size.
    fn compressed(&self, codec: Compression, records: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_SIZE + records.len());
        out.resize(HEADER_SIZE, 0);
        out.extend_from_slice(records);
        self.fill_header(codec, &mut out);
        out
    }

    /// Writes the header into the first [`HEADER_SIZE`] bytes of `batch` (the whole batch,
    /// records after the header), CRC last.
    fn fill_header(&self, codec: Compression, batch: &mut [u8]) {
        let size = batch.len();
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            batch[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&0i64.to_be_bytes());
        put(&((size - LOG_OVERHEAD) as i32).to_be_bytes());
        put(&(-1i32).to_be_bytes());
        put(&[MAGIC_V2 as u8]);
        put(&0u32.to_be_bytes()); // CRC, filled below
        put(&i16::from(codec.id()).to_be_bytes());
        put(&(self.count - 1).max(0).to_be_bytes());
        put(&self.base_timestamp.to_be_bytes());
        put(&self.max_timestamp.to_be_bytes());
        put(&self.producer.0.to_be_bytes());
        put(&self.producer.1.to_be_bytes());
        put(&self.producer.2.to_be_bytes());
        put(&self.count.to_be_bytes());
        debug_assert_eq!(at, HEADER_SIZE);
        let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
        batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        BatchBuilder::new(1_000)
            .record(Some(b"k1"), Some(b"v1"))
            .record_at(1_005, None, Some(b"v2"), &[(b"h", Some(b"x"))])
            .record_at(1_002, Some(b"k3"), None, &[])
            .build()
    }

    #[test]
    fn header_fields_read_back() {
        let bytes = sample();
        let b = RecordBatch::parse(&bytes).unwrap();
        b.validate().unwrap();
        assert_eq!(b.size(), bytes.len());
        assert_eq!(b.magic(), 2);
        assert_eq!(b.record_count(), 3);
        assert_eq!(b.last_offset_delta(), 2);
        assert_eq!(b.base_timestamp(), 1_000);
        assert_eq!(b.max_timestamp(), 1_005);
        assert_eq!(b.producer_id(), -1);
        assert_eq!(b.compression(), Some(Compression::None));
        let records: Vec<_> = b.records().unwrap().map(Result::unwrap).collect();
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].headers, vec![(&b"h"[..], Some(&b"x"[..]))]);
        assert_eq!(records[2].value, None);
        assert_eq!(records[2].timestamp, 1_002);
    }

    #[test]
    fn headers_round_trip_through_records() {
        let headers: Vec<(String, Option<Vec<u8>>)> = vec![
            ("trace-id".into(), Some(b"abc123".to_vec())),
            ("empty".into(), Some(Vec::new())),
            ("null".into(), None),
        ];
        let mut builder = BatchBuilder::new(5_000).producer(7, 1, 40);
        builder.push(
            5_000,
            Some(b"k"),
            Some(b"v"),
            headers.iter().map(|(k, v)| (k.as_bytes(), v.as_deref())),
        );
        builder.push(4_990, None, None, std::iter::empty());
        let long_value = vec![b'x'; 300];
        builder.push(
            5_200,
            Some(b""),
            Some(&long_value),
            [(&b"h"[..], Some(&b"1"[..]))],
        );
        assert_eq!(builder.len(), 3);
        let expected_len = builder.encoded_len();
        let bytes = builder.build();
        assert_eq!(bytes.len(), expected_len);
        let batch = RecordBatch::parse(&bytes).unwrap();
        batch.validate().unwrap();
        assert_eq!(
            (
                batch.producer_id(),
                batch.producer_epoch(),
                batch.base_sequence()
            ),
            (7, 1, 40)
        );
        assert_eq!(batch.max_timestamp(), 5_200);
        let records: Vec<_> = batch.records().unwrap().map(Result::unwrap).collect();
        assert_eq!(records.len(), 3);
        assert_eq!(
            records[0].headers,
            vec![
                (&b"trace-id"[..], Some(&b"abc123"[..])),
                (&b"empty"[..], Some(&b""[..])),
                (&b"null"[..], None),
            ]
        );
        assert_eq!(
            (records[0].key, records[0].value),
            (Some(&b"k"[..]), Some(&b"v"[..]))
        );
        assert_eq!((records[1].key, records[1].value), (None, None));
        assert!(records[1].headers.is_empty());
        assert_eq!(records[1].timestamp, 4_990);
        assert_eq!(records[2].value, Some(&long_value[..]));
        assert_eq!(records[2].headers, vec![(&b"h"[..], Some(&b"1"[..]))]);
        assert_eq!(
            records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    #[test]
    fn varlong_len_matches_the_encoder() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            8191,
            8192,
            i64::MAX,
            i64::MIN,
            300,
        ] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(varlong_len(v), out.len(), "{v}");
        }
    }

    #[test]
    fn rewriting_offset_and_epoch_keeps_the_crc_valid() {
        let mut bytes = sample();
        RecordBatch::set_base_offset(&mut bytes, 1 << 40).unwrap();
        RecordBatch::set_partition_leader_epoch(&mut bytes, 7).unwrap();
        let b = RecordBatch::parse(&bytes).unwrap();
        b.validate().unwrap();
        assert_eq!(b.base_offset(), 1 << 40);
        assert_eq!(b.last_offset(), (1 << 40) + 2);
        assert_eq!(b.partition_leader_epoch(), 7);
        assert_eq!(
            b.records().unwrap().next().unwrap().unwrap().offset,
            1 << 40
        );
    }

    #[test]
    fn every_flipped_bit_in_the_crc_range_is_caught() {
        let bytes = sample();
        for byte in ATTRIBUTES..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[byte] ^= 1 << bit;
                let verdict = RecordBatch::parse(&bad).and_then(|b| b.validate());
                assert!(verdict.is_err(), "flip at {byte}:{bit} went unnoticed");
            }
        }
    }

    #[test]
    fn rejects_bad_magic_length_and_truncation() {
        let mut bytes = sample();
        bytes[MAGIC] = 1;
        assert_eq!(
            RecordBatch::parse(&bytes).unwrap().validate(),
            Err(BatchError::UnsupportedMagic(1))
        );
        let bytes = sample();
        assert!(matches!(
            RecordBatch::parse(&bytes[..bytes.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        let mut bytes = sample();
        bytes[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&3i32.to_be_bytes());
        assert_eq!(
            RecordBatch::parse(&bytes).unwrap_err(),
            BatchError::InvalidLength(3)
        );
        let empty = BatchBuilder::new(0).build();
        assert!(RecordBatch::parse(&empty).unwrap().validate().is_err());
    }

    /// Found by fuzzing: offset sums near the ends of `i64` must not panic.
    #[test]
    fn extreme_base_offsets_do_not_panic() {
        for base in [i64::MAX, i64::MAX - 1, i64::MIN] {
            let mut bytes = sample();
            RecordBatch::set_base_offset(&mut bytes, base).unwrap();
            let b = RecordBatch::parse(&bytes).unwrap();
            b.validate().unwrap();
            let _ = (b.last_offset(), b.next_offset());
            assert_eq!(b.records().unwrap().count(), 3);
        }
    }

    #[test]
    fn iterates_concatenated_batches_and_stops_at_garbage() {
        let mut all = sample();
        all.extend_from_slice(&sample());
        all.extend_from_slice(&[0, 1, 2]);
        let items: Vec<_> = batches(&all).collect();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok() && items[2].is_err());
    }

    /// Our builder's bytes decode with the `kafka-protocol` crate, and its encoder's bytes pass
    /// our validation: the two agree on the format.
    #[test]
    fn agrees_with_the_kafka_protocol_crate() {
        use kafka_protocol::records::{
            Compression as KCompression, RecordBatchDecoder, RecordBatchEncoder,
            RecordEncodeOptions, TimestampType,
        };
        let mut ours = bytes::Bytes::from(sample());
        let decoded = RecordBatchDecoder::decode(&mut ours).unwrap();
        assert_eq!(decoded.records.len(), 3);
        assert_eq!(decoded.records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(decoded.records[1].timestamp, 1_005);

        let records: Vec<_> = (0..5)
            .map(|i| kafka_protocol::records::Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: 9,
                producer_epoch: 1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: i as i32,
                timestamp: 2_000 + i,
                key: Some(bytes::Bytes::from(format!("key{i}"))),
                value: Some(bytes::Bytes::from(vec![b'x'; 100])),
                headers: Default::default(),
            })
            .collect();
        let mut theirs = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut theirs,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: KCompression::None,
            },
        )
        .unwrap();
        let b = RecordBatch::parse(&theirs).unwrap();
        b.validate().unwrap();
        assert_eq!(b.record_count(), 5);
        assert_eq!(b.producer_id(), 9);
        assert_eq!(b.max_timestamp(), 2_004);
        assert_eq!(b.records().unwrap().count(), 5);
    }

    proptest! {
        #[test]
        fn parse_and_validate_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for b in batches(&bytes).flatten() {
                let _ = b.validate();
                let _ = b.records().map(|r| r.count());
                let _ = b.decompressed_with_limit(4096).map(|d| d.records().count());
            }
        }

        #[test]
        fn records_with_headers_read_back_as_pushed(
            records in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
                 -5_000i64..10_000,
                 proptest::collection::vec(
                    (proptest::collection::vec(any::<u8>(), 0..10),
                     proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10))),
                    0..4)),
                1..20)
        ) {
            let mut builder = BatchBuilder::new(1_000_000);
            for (k, v, dt, headers) in &records {
                builder.push(
                    1_000_000 + dt,
                    k.as_deref(),
                    v.as_deref(),
                    headers.iter().map(|(k, v)| (&k[..], v.as_deref())),
                );
            }
            let expected_len = builder.encoded_len();
            let bytes = builder.build();
            prop_assert_eq!(bytes.len(), expected_len);
            let b = RecordBatch::parse(&bytes).unwrap();
            prop_assert!(b.validate().is_ok());
            let back: Vec<_> = b.records().unwrap().map(Result::unwrap).collect();
            prop_assert_eq!(back.len(), records.len());
            for (r, (k, v, dt, headers)) in back.iter().zip(&records) {
                prop_assert_eq!(r.key, k.as_deref());
                prop_assert_eq!(r.value, v.as_deref());
                prop_assert_eq!(r.timestamp, 1_000_000 + dt);
                let pushed: Vec<(&[u8], Option<&[u8]>)> =
                    headers.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
                prop_assert_eq!(&r.headers, &pushed);
            }
        }

        #[test]
        fn built_batches_round_trip(
            records in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..50)),
                 0i64..10_000),
                1..20)
        ) {
            let mut builder = BatchBuilder::new(1_000_000);
            for (k, v, dt) in &records {
                builder = builder.record_at(1_000_000 + dt, k.as_deref(), v.as_deref(), &[]);
            }
            let bytes = builder.build();
            let b = RecordBatch::parse(&bytes).unwrap();
            prop_assert!(b.validate().is_ok());
            let back: Vec<_> = b.records().unwrap().map(Result::unwrap).collect();
            prop_assert_eq!(back.len(), records.len());
            for (r, (k, v, dt)) in back.iter().zip(&records) {
                prop_assert_eq!(r.key, k.as_deref());
                prop_assert_eq!(r.value, v.as_deref());
                prop_assert_eq!(r.timestamp, 1_000_000 + dt);
            }
        }
    }

    /// Compressed batches; needs every codec (`--no-default-features` skips them).
    #[cfg(all(
        feature = "gzip",
        feature = "snappy",
        feature = "lz4",
        feature = "zstd"
    ))]
    mod compressed {
        use super::*;

        const CODECS: [Compression; 4] = [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];

        /// (timestamp, key, value, headers) of a few records, one of them large enough to span
        /// several snappy / lz4 blocks.
        type Sample = (
            i64,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Vec<(Vec<u8>, Option<Vec<u8>>)>,
        );

        fn varied_records() -> Vec<Sample> {
            let big: Vec<u8> = (0..150_000u32).map(|i| (i % 7 + i / 5000) as u8).collect();
            vec![
                (1_000, Some(b"k1".to_vec()), Some(b"v1".to_vec()), vec![]),
                (
                    1_005,
                    None,
                    Some(b"v2".to_vec()),
                    vec![(b"h".to_vec(), Some(b"x".to_vec())), (b"n".to_vec(), None)],
                ),
                (999, Some(b"k3".to_vec()), None, vec![]),
                (1_010, Some(Vec::new()), Some(big), vec![]),
            ]
        }

        fn build(records: &[Sample], codec: Compression) -> Vec<u8> {
            let mut builder = BatchBuilder::new(1_000)
                .producer(5, 2, 17)
                .compression(codec);
            for (ts, k, v, h) in records {
                builder.push(
                    *ts,
                    k.as_deref(),
                    v.as_deref(),
                    h.iter().map(|(k, v)| (&k[..], v.as_deref())),
                );
            }
            builder.build()
        }

        #[test]
        fn compressed_batches_validate_and_read_back_like_uncompressed_ones() {
            let records = varied_records();
            let plain = build(&records, Compression::None);
            let plain_batch = RecordBatch::parse(&plain).unwrap();
            let plain_read = plain_batch.decompressed().unwrap();
            assert!(
                plain_read.is_borrowed(),
                "uncompressed batches are not copied"
            );
            let expected: Vec<_> = plain_read.records().map(Result::unwrap).collect();
            assert_eq!(expected.len(), records.len());
            for codec in CODECS {
                let mut bytes = build(&records, codec);
                assert!(
                    bytes.len() < plain.len() / 4,
                    "{codec}: {} bytes",
                    bytes.len()
                );
                RecordBatch::set_base_offset(&mut bytes, 100).unwrap();
                let b = RecordBatch::parse(&bytes).unwrap();
                b.validate().unwrap();
                assert_eq!(b.compression(), Some(codec));
                assert_eq!(b.attributes() & 0x07, i16::from(codec.id()));
                assert_eq!(
                    (b.record_count(), b.last_offset_delta(), b.max_timestamp()),
                    (4, 3, 1_010)
                );
                assert_eq!(
                    (b.producer_id(), b.producer_epoch(), b.base_sequence()),
                    (5, 2, 17)
                );
                assert!(matches!(b.records(), Err(BatchError::Malformed(_))));
                let read = b.decompressed().unwrap();
                assert!(!read.is_borrowed());
                assert_eq!(read.as_bytes(), plain_batch.records_section(), "{codec}");
                let got: Vec<_> = read.records().map(Result::unwrap).collect();
                for (g, e) in got.iter().zip(&expected) {
                    assert_eq!(g.offset, e.offset + 100);
                    assert_eq!((g.timestamp, g.key, g.value), (e.timestamp, e.key, e.value));
                    assert_eq!(g.headers, e.headers);
                }
                assert_eq!(got.len(), expected.len());
            }
        }

        #[test]
        fn set_producer_restamps_a_compressed_batch_without_touching_its_records() {
            for codec in Compression::ALL {
                let mut bytes = build(&varied_records(), codec);
                let before = bytes.clone();
                RecordBatch::set_producer(&mut bytes, 42, 7, 1_000).unwrap();
                let b = RecordBatch::parse(&bytes).unwrap();
                b.validate().unwrap();
                assert_eq!(
                    (b.producer_id(), b.producer_epoch(), b.base_sequence()),
                    (42, 7, 1_000)
                );
                assert_eq!(b.records_section(), &before[HEADER_SIZE..]);
                assert_eq!(b.decompressed().unwrap().records().count(), 4);
            }
            assert!(RecordBatch::set_producer(&mut [0u8; 10], 1, 1, 1).is_err());
        }

        #[test]
        fn a_bomb_or_corrupt_records_fail_with_a_clear_error() {
            let zeros = vec![0u8; 100_000];
            for codec in CODECS {
                let bytes = BatchBuilder::new(0)
                    .compression(codec)
                    .record(None, Some(&zeros))
                    .build();
                let b = RecordBatch::parse(&bytes).unwrap();
                let err = b.decompressed_with_limit(50_000).unwrap_err();
                assert!(
                    matches!(
                        err,
                        BatchError::Compression(CompressionError::TooLarge { limit: 50_000, .. })
                    ),
                    "{codec}: {err}"
                );
                assert!(err.to_string().contains("cannot be decompressed"), "{err}");
                assert_eq!(
                    b.decompressed_with_limit(100_100)
                        .unwrap()
                        .records()
                        .count(),
                    1
                );

                // Garbage in place of the compressed records, with a CRC that matches it: the batch
                // passes the integrity check (as a broker would store it) and fails to decompress.
                let mut bad = bytes.clone();
                for byte in &mut bad[HEADER_SIZE..] {
                    *byte = byte.wrapping_mul(31).wrapping_add(7);
                }
                let crc = crc32c::crc32c(&bad[ATTRIBUTES..]);
                bad[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
                let b = RecordBatch::parse(&bad).unwrap();
                b.validate().unwrap();
                assert!(b.decompressed().is_err(), "{codec}");
            }
            // An undefined codec.
            let mut bytes = sample();
            bytes[ATTRIBUTES + 1] |= 0x06;
            let b = RecordBatch::parse(&bytes).unwrap();
            assert!(matches!(
                b.decompressed(),
                Err(BatchError::Malformed("undefined compression codec"))
            ));
        }

        /// The `kafka-protocol` crate (an independent implementation of Kafka's codecs) reads our
        /// batches, uncompressed and compressed, and we read its.
        #[test]
        fn batches_agree_with_the_kafka_protocol_crate() {
            use kafka_protocol::records::{
                Compression as KCompression, RecordBatchDecoder, RecordBatchEncoder,
                RecordEncodeOptions, TimestampType,
            };
            let records = varied_records();
            // Uncompressed too: its batch is built in place, unlike the compressed ones.
            for (ours, theirs) in [Compression::None].into_iter().chain(CODECS).zip([
                KCompression::None,
                KCompression::Gzip,
                KCompression::Snappy,
                KCompression::Lz4,
                KCompression::Zstd,
            ]) {
                let mut bytes = bytes::Bytes::from(build(&records, ours));
                let decoded = RecordBatchDecoder::decode(&mut bytes).unwrap();
                assert_eq!(decoded.compression, theirs);
                assert_eq!(decoded.records.len(), records.len());
                for (d, (ts, k, v, h)) in decoded.records.iter().zip(&records) {
                    assert_eq!(d.timestamp, *ts);
                    assert_eq!(d.key.as_deref(), k.as_deref());
                    assert_eq!(d.value.as_deref(), v.as_deref());
                    assert_eq!(d.headers.len(), h.len());
                }

                let kafka_records: Vec<_> = (0..50)
                    .map(|i| kafka_protocol::records::Record {
                        transactional: false,
                        control: false,
                        delete_horizon: false,
                        partition_leader_epoch: 0,
                        producer_id: 9,
                        producer_epoch: 1,
                        timestamp_type: TimestampType::Creation,
                        offset: i,
                        sequence: i as i32,
                        timestamp: 2_000 + i,
                        key: Some(bytes::Bytes::from(format!("key{i}"))),
                        value: Some(bytes::Bytes::from(vec![b'x'; 1_000])),
                        headers: Default::default(),
                    })
                    .collect();
                let mut encoded = bytes::BytesMut::new();
                RecordBatchEncoder::encode(
                    &mut encoded,
                    &kafka_records,
                    &RecordEncodeOptions {
                        version: 2,
                        compression: theirs,
                    },
                )
                .unwrap();
                let b = RecordBatch::parse(&encoded).unwrap();
                b.validate().unwrap();
                assert_eq!(b.compression(), Some(ours));
                let read = b.decompressed().unwrap();
                let got: Vec<_> = read.records().map(Result::unwrap).collect();
                assert_eq!(got.len(), 50, "{ours}");
                assert_eq!(got[49].key, Some(&b"key49"[..]));
                assert_eq!(got[49].value.map(<[u8]>::len), Some(1_000));
                assert_eq!(got[49].timestamp, 2_049);
            }
        }

        proptest! {
            /// Every codec round-trips arbitrary records through a built batch.
            #[test]
            fn compressed_batches_round_trip(
                codec in proptest::sample::select(Compression::ALL.to_vec()),
                records in proptest::collection::vec(
                    (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                     proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
                     -1_000i64..10_000,
                     proptest::collection::vec(
                        (proptest::collection::vec(any::<u8>(), 0..10),
                         proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10))),
                        0..3)),
                    1..30)
            ) {
                let records: Vec<Sample> = records
                    .into_iter()
                    .map(|(k, v, dt, h)| (1_000 + dt, k, v, h))
                    .collect();
                let bytes = build(&records, codec);
                let b = RecordBatch::parse(&bytes).unwrap();
                prop_assert!(b.validate().is_ok());
                prop_assert_eq!(b.compression(), Some(codec));
                let read = b.decompressed().unwrap();
                let back: Vec<_> = read.records().map(Result::unwrap).collect();
                prop_assert_eq!(back.len(), records.len());
                for (r, (ts, k, v, h)) in back.iter().zip(&records) {
                    prop_assert_eq!(r.timestamp, *ts);
                    prop_assert_eq!(r.key, k.as_deref());
                    prop_assert_eq!(r.value, v.as_deref());
                    let headers: Vec<(&[u8], Option<&[u8]>)> =
                        h.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
                    prop_assert_eq!(&r.headers, &headers);
                }
            }
        }
    }
}
