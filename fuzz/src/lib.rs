//! What the fuzz targets and the seed generator share: a reader for the structured inputs, the
//! on-disk encodings the targets write (as the crates document them, written here again so a
//! target checks the decoders against an independent encoder), and the log the `index_recovery`
//! target damages.

use std::sync::Arc;

use staunch_core::{BatchBuilder, ManualClock, RecordBatch};
use staunch_log::{FileLog, FlushPolicy, LogConfig, LogStore};
use staunch_testkit::FaultyIo;

/// Reads a fuzz input front to back; every read past the end yields zeros / empty slices, so
/// any input is a complete program.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, or 0.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `n` bytes, or what is left.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// A length byte, then that many bytes.
    pub fn short(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte());
        self.bytes(n)
    }

    /// The next 8 bytes as a big-endian `i64` (zero-padded).
    pub fn i64(&mut self) -> i64 {
        let mut be = [0u8; 8];
        let b = self.bytes(8);
        be[..b.len()].copy_from_slice(b);
        i64::from_be_bytes(be)
    }

    /// The next 4 bytes as a big-endian `i32` (zero-padded).
    pub fn i32(&mut self) -> i32 {
        let mut be = [0u8; 4];
        let b = self.bytes(4);
        be[..b.len()].copy_from_slice(b);
        i32::from_be_bytes(be)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// The key of an offsets-log record: group and topic (each a `u32` length and UTF-8 bytes),
/// then the partition (`i32`), big-endian. (`staunch-broker`'s `offsets` module.)
pub fn offsets_key(group: &[u8], topic: &[u8], partition: i32) -> Vec<u8> {
    let mut key = Vec::new();
    for part in [group, topic] {
        key.extend_from_slice(&(part.len() as u32).to_be_bytes());
        key.extend_from_slice(part);
    }
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// The value of an offsets-log record: offset `i64`, leader epoch `i32`, commit time `i64`,
/// then the metadata (`u32` length and UTF-8 bytes), big-endian.
pub fn offsets_value(
    offset: i64,
    leader_epoch: i32,
    commit_time_ms: i64,
    metadata: &[u8],
) -> Vec<u8> {
    let mut value = Vec::new();
    value.extend_from_slice(&offset.to_be_bytes());
    value.extend_from_slice(&leader_epoch.to_be_bytes());
    value.extend_from_slice(&commit_time_ms.to_be_bytes());
    value.extend_from_slice(&(metadata.len() as u32).to_be_bytes());
    value.extend_from_slice(metadata);
    value
}

/// Magic of a segment's index file (`<base>.index`), as `staunch-log`'s `meta` module writes it.
pub const INDEX_MAGIC: &[u8; 4] = b"STIX";
/// Magic of the clean-shutdown marker.
pub const MARKER_MAGIC: &[u8; 4] = b"STCS";
/// Magic of the truncation intent.
pub const INTENT_MAGIC: &[u8; 4] = b"STTI";
/// Magic of the recovery point (the durable-end checkpoint).
pub const RECOVERY_POINT_MAGIC: &[u8; 4] = b"STRP";
/// Version byte of all three.
pub const META_VERSION: u8 = 1;

/// `magic | version | body | crc32c` (the frame of the log's small files).
pub fn seal(magic: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 9);
    out.extend_from_slice(magic);
    out.push(META_VERSION);
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The body of a sealed file, if its CRC, magic and version check.
pub fn unseal<'a>(bytes: &'a [u8], magic: &[u8; 4]) -> Option<&'a [u8]> {
    if bytes.len() < 9 {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    (crc32c::crc32c(body).to_be_bytes() == crc && &body[..4] == magic && body[4] == META_VERSION)
        .then_some(&body[5..])
}

/// Clock of the `index_recovery` log (fixed, so its index files are the same on every run).
pub const INDEX_LOG_CLOCK_MS: i64 = 1_700_000_000_000;

/// Configuration of the `index_recovery` log: 1 KiB segments, an index entry every 64 bytes.
pub fn index_log_config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Always,
        segment_bytes: 1024,
        max_batch_bytes: 1024,
        index_interval_bytes: 64,
        retention_age: None,
        retention_bytes: None,
        // No zeros ahead of the data: a background thread writing 8 MiB per open is most of
        // an iteration's time on the in-memory disk.
        zero_fill_bytes: 0,
        ..LogConfig::default()
    }
}

/// A log of several segments, closed cleanly (every segment has its index file, the
/// clean-shutdown marker names the active one, the recovery point is at the log end), on an
/// in-memory disk, with every batch it
/// holds as stored (base offset and leader epoch stamped), in offset order.
pub fn index_log() -> (FaultyIo, Vec<Vec<u8>>) {
    let disk = FaultyIo::new();
    let clock = Arc::new(ManualClock::new(INDEX_LOG_CLOCK_MS));
    let log = FileLog::open_with(Arc::new(disk.clone()), index_log_config(), clock.clone())
        .expect("opening the index_recovery log");
    for i in 0..24i64 {
        let ts = INDEX_LOG_CLOCK_MS + i * 10;
        let mut b = BatchBuilder::new(ts);
        for r in 0..=(i % 3) {
            let value = vec![b'a' + (i as u8 % 26); 20 + (i as usize * 13 + r as usize * 7) % 60];
            b = b.record_at(
                ts + r,
                Some(format!("k{i}-{r}").as_bytes()),
                Some(&value),
                &[],
            );
        }
        let mut bytes = b.build();
        log.append(&mut bytes, (i / 4) as i32)
            .expect("appending to the index_recovery log");
        clock.advance(1);
    }
    let end = log.log_end();
    let mut batches = Vec::new();
    let mut from = 0;
    while from < end {
        let read = log.read(from, 1).expect("reading the index_recovery log");
        let batch = RecordBatch::parse(&read.bytes).expect("a stored batch parses");
        batches.push(batch.as_bytes().to_vec());
        from = batch.next_offset();
    }
    assert!(
        log.segment_count() >= 4,
        "the log must span several segments"
    );
    log.close().expect("closing the index_recovery log");
    (disk, batches)
}
