//! Reading a segment file batch by batch without trusting a byte of it: the prefix scan that
//! recovery rebuilds a segment from ([`scan`]), and the full walk that also looks *past* damage
//! for the valid batches after it ([`walk_from`]), which recovery uses to tell a torn tail from
//! bit rot and `check` uses to list every damaged region.
//!
//! Nothing here writes, and nothing here panics on what it reads: every length, offset and count
//! comes from the disk and is checked before use.

use staunch_core::batch::{HEADER_SIZE, MAGIC_V2};
use staunch_core::{Offset, RecordBatch};

use super::segment::Segment;
use crate::LogError;
use crate::io::{SegmentFile, read_exact_at};

/// Bytes read from the file at a time.
const CHUNK: u64 = 8 << 20;

/// Byte position of the magic byte in a batch header.
const MAGIC_AT: usize = 16;

/// A segment file read through one buffer of up to [`CHUNK`] bytes (or one batch, if larger).
pub(crate) struct Chunks<'a> {
    file: &'a dyn SegmentFile,
    name: &'a str,
    len: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    start: u64,
}

impl<'a> Chunks<'a> {
    /// A reader of the first `len` bytes of `file` (named `name` in errors).
    pub(crate) fn new(file: &'a dyn SegmentFile, name: &'a str, len: u64) -> Self {
        Self {
            file,
            name,
            len,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The bytes `pos..pos + n`, or fewer if the file ends first (none at or past its end).
    pub(crate) fn get(&mut self, pos: u64, n: u64) -> Result<&[u8], LogError> {
        let end = pos.saturating_add(n).min(self.len);
        if pos >= end {
            return Ok(&[]);
        }
        let buf_end = self.start + self.buf.len() as u64;
        if pos < self.start || end > buf_end {
            let want = CHUNK.max(end - pos).min(self.len - pos);
            let want = usize::try_from(want).map_err(|_| {
                LogError::io(
                    format!("reading {} at {pos}", self.name),
                    std::io::ErrorKind::OutOfMemory.into(),
                )
            })?;
            self.buf.resize(want, 0);
            read_exact_at(self.file, &mut self.buf, pos)
                .map_err(|e| LogError::io(format!("reading {} at {pos}", self.name), e))?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        let to = (end - self.start) as usize;
        Ok(&self.buf[from..to])
    }

    /// Whether bytes `from..to` are all zero.
    pub(crate) fn all_zero(&mut self, from: u64, to: u64) -> Result<bool, LogError> {
        let mut pos = from;
        while pos < to.min(self.len) {
            let bytes = self.get(pos, (to - pos).min(CHUNK))?;
            if bytes.is_empty() {
                break;
            }
            if bytes.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            pos += bytes.len() as u64;
        }
        Ok(true)
    }
}

/// A batch that passed every check that needs no record decoding (framing, magic 2, CRC-32C,
/// record count against offset delta).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchInfo {
    pub(crate) size: u64,
    pub(crate) base_offset: Offset,
    pub(crate) next_offset: Offset,
    pub(crate) records: u64,
    pub(crate) max_timestamp: i64,
}

/// The batch at `pos`, or why there is none.
pub(crate) fn batch_at(
    chunks: &mut Chunks<'_>,
    pos: u64,
) -> Result<Result<BatchInfo, String>, LogError> {
    let remaining = chunks.len.saturating_sub(pos);
    if remaining < HEADER_SIZE as u64 {
        return Ok(Err(format!(
            "torn batch at the end of the segment: {remaining} bytes, less than a batch header"
        )));
    }
    let header = chunks.get(pos, HEADER_SIZE as u64)?;
    let size = match RecordBatch::peek_size(header) {
        Some(Ok(size)) => size as u64,
        Some(Err(e)) => return Ok(Err(e.to_string())),
        None => return Ok(Err("short batch header".into())),
    };
    if size > remaining {
        return Ok(Err(format!(
            "torn batch at the end of the segment: its length says {size} bytes, {remaining} are left"
        )));
    }
    let bytes = chunks.get(pos, size)?;
    let batch = match RecordBatch::parse(bytes) {
        Ok(batch) => batch,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if let Err(e) = batch.verify_integrity() {
        return Ok(Err(e.to_string()));
    }
    Ok(Ok(BatchInfo {
        size,
        base_offset: batch.base_offset(),
        next_offset: batch.next_offset(),
        // verify_integrity checked the count is positive.
        records: u64::try_from(batch.record_count()).unwrap_or(0),
        max_timestamp: batch.max_timestamp(),
    }))
}

/// Where a scan stopped, what offset the batch there should have started with, and why it is
/// not that batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stop {
    pub(crate) position: u64,
    pub(crate) expected_offset: Offset,
    pub(crate) reason: String,
}

/// What a prefix scan of a segment found; the valid prefix is the segment's `size`.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Why the scan stopped before the end of the file, if it did.
    pub(crate) stopped: Option<Stop>,
}

/// Reads a segment from the start, checking every batch (framing, magic, CRC-32C, offsets
/// contiguous from `segment.base`), and rebuilds its size, offsets and index from the valid
/// prefix. Stops at the first batch that fails.
pub(crate) fn scan(
    segment: &mut Segment,
    file_len: u64,
    index_interval: u64,
) -> Result<Scan, LogError> {
    let name = segment.name();
    segment.size = 0;
    segment.next_offset = segment.base;
    segment.max_timestamp = i64::MIN;
    segment.index.clear();
    segment.bytes_since_index = 0;
    let file = segment.file.clone();
    let mut chunks = Chunks::new(&*file, &name, file_len);
    let mut pos = 0;
    while pos < file_len {
        let reason = match batch_at(&mut chunks, pos)? {
            Ok(b) if b.base_offset == segment.next_offset => {
                segment.note_batch(
                    pos,
                    b.size,
                    b.base_offset,
                    b.next_offset,
                    b.max_timestamp,
                    index_interval,
                );
                pos += b.size;
                continue;
            }
            Ok(b) => format!(
                "batch base offset {} where {} was expected",
                b.base_offset, segment.next_offset
            ),
            Err(reason) => reason,
        };
        return Ok(Scan {
            stopped: Some(Stop {
                position: pos,
                expected_offset: segment.next_offset,
                reason,
            }),
        });
    }
    Ok(Scan { stopped: None })
}

/// A stretch of a segment file, as [`walk_from`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Region {
    /// Valid batches with contiguous offsets.
    Batches {
        start: u64,
        end: u64,
        base_offset: Offset,
        next_offset: Offset,
        batches: u64,
        records: u64,
    },
    /// Bytes that are not valid batches continuing the offsets before them.
    Damaged(Damaged),
}

/// A damaged stretch of a segment: from a position where a batch with `expected_offset` should
/// start, to the next valid batch (whose base offset is `resumes_at`) or the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damaged {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) expected_offset: Offset,
    /// The base offset of the valid batch at `end`, if there is one.
    pub(crate) resumes_at: Option<Offset>,
    pub(crate) reason: String,
    /// Records counted from the batch headers that could be read in the stretch.
    pub(crate) records: u64,
    /// Whether those headers account for every byte of the stretch (else `records` is a lower
    /// bound).
    pub(crate) records_exact: bool,
    /// Whether every byte of the stretch is zero (blocks reserved or zero-filled ahead of the
    /// data, never written).
    pub(crate) zeros: bool,
}

/// [`walk_from`] over the whole segment `base` of `io`, from its first byte: the file's length
/// and its regions.
pub(crate) fn walk_segment(
    io: &dyn crate::io::SegmentIo,
    base: Offset,
) -> Result<(u64, Vec<Region>), LogError> {
    let name = super::segment::log_name(base);
    let file = io
        .open(&name, false)
        .map_err(|e| LogError::io(format!("opening {name}"), e))?;
    let len = file
        .size()
        .map_err(|e| LogError::io(format!("reading length of {name}"), e))?;
    Ok((
        len,
        walk_from(&mut Chunks::new(&*file, &name, len), 0, base)?,
    ))
}

/// Walks a segment from `pos`, where a batch with base offset `expected` should start, to the
/// end of the file: runs of valid contiguous batches, and damaged stretches between them. After
/// damage it searches byte by byte for the next valid batch whose base offset is at least the
/// one expected (magic 2, a length that fits, a matching CRC-32C) and goes on from there.
pub(crate) fn walk_from(
    chunks: &mut Chunks<'_>,
    mut pos: u64,
    mut expected: Offset,
) -> Result<Vec<Region>, LogError> {
    let len = chunks.len;
    let mut regions = Vec::new();
    let mut run: Option<Region> = None;
    while pos < len {
        let reason = match batch_at(chunks, pos)? {
            Ok(b) if b.base_offset == expected => {
                match &mut run {
                    Some(Region::Batches {
                        end,
                        next_offset,
                        batches,
                        records,
                        ..
                    }) => {
                        *end += b.size;
                        *next_offset = b.next_offset;
                        *batches += 1;
                        *records += b.records;
                    }
                    _ => {
                        run = Some(Region::Batches {
                            start: pos,
                            end: pos + b.size,
                            base_offset: b.base_offset,
                            next_offset: b.next_offset,
                            batches: 1,
                            records: b.records,
                        });
                    }
                }
                pos += b.size;
                expected = b.next_offset;
                continue;
            }
            Ok(b) => format!(
                "batch base offset {} where {expected} was expected",
                b.base_offset
            ),
            Err(reason) => reason,
        };
        regions.extend(run.take());
        let next = resync(chunks, pos + 1, expected)?;
        let end = next.map_or(len, |(q, _)| q);
        let (records, records_exact) = tally(chunks, pos, end)?;
        regions.push(Region::Damaged(Damaged {
            start: pos,
            end,
            expected_offset: expected,
            resumes_at: next.map(|(_, b)| b.base_offset),
            reason,
            records,
            records_exact,
            zeros: chunks.all_zero(pos, end)?,
        }));
        match next {
            Some((q, b)) => {
                pos = q;
                expected = b.base_offset;
            }
            None => break,
        }
    }
    regions.extend(run);
    Ok(regions)
}

/// The first position at or after `from` holding a valid batch whose base offset is at least
/// `min_base`, and that batch.
fn resync(
    chunks: &mut Chunks<'_>,
    from: u64,
    min_base: Offset,
) -> Result<Option<(u64, BatchInfo)>, LogError> {
    let len = chunks.len;
    let mut q = from;
    while q + HEADER_SIZE as u64 <= len {
        // A whole buffer of candidates at once; cheap tests first, the CRC last.
        let window = chunks.get(q, CHUNK)?.to_vec();
        let mut hit = None;
        for i in 0..window.len() {
            let h = &window[i..];
            if h.len() < HEADER_SIZE {
                break;
            }
            if h[MAGIC_AT] != MAGIC_V2 as u8 {
                continue;
            }
            let at = q + i as u64;
            let fits =
                matches!(RecordBatch::peek_size(h), Some(Ok(size)) if at + size as u64 <= len);
            let base = i64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
            if !fits || base < min_base {
                continue;
            }
            if let Ok(b) = batch_at(chunks, at)? {
                hit = Some((at, b));
                break;
            }
        }
        if hit.is_some() {
            return Ok(hit);
        }
        // The last header-sized tail of this window is looked at again with the next one.
        let advanced = (window.len() as u64).saturating_sub(HEADER_SIZE as u64 - 1);
        if advanced == 0 {
            break;
        }
        q += advanced;
    }
    Ok(None)
}

/// Records in `start..end` counted from the batch headers that can be followed from `start`
/// (magic 2, a positive record count, a length that stays inside the stretch — or, at the end
/// of the file, a torn last batch). Returns the count and whether the headers account for the
/// whole stretch.
pub(crate) fn tally(
    chunks: &mut Chunks<'_>,
    start: u64,
    end: u64,
) -> Result<(u64, bool), LogError> {
    let mut pos = start;
    let mut records = 0u64;
    while pos < end {
        let header = chunks.get(pos, HEADER_SIZE as u64)?;
        if header.len() < HEADER_SIZE || header[MAGIC_AT] != MAGIC_V2 as u8 {
            break;
        }
        let Some(Ok(size)) = RecordBatch::peek_size(header) else {
            break;
        };
        let count = i32::from_be_bytes([header[57], header[58], header[59], header[60]]);
        if count <= 0 {
            break;
        }
        let batch_end = pos.saturating_add(size as u64);
        if batch_end > end && end < chunks.len {
            break; // a header whose length leaves the stretch: not to be believed
        }
        records = records.saturating_add(count as u64);
        pos = batch_end.min(end);
    }
    Ok((records, pos >= end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FsSegmentIo;
    use crate::io::SegmentIo;
    use staunch_core::BatchBuilder;

    fn batch_bytes(base: Offset, records: usize) -> Vec<u8> {
        let mut b = BatchBuilder::new(1_000);
        for i in 0..records {
            b = b.record(None, Some(format!("value {i}").as_bytes()));
        }
        let mut bytes = b.build();
        RecordBatch::set_base_offset(&mut bytes, base).unwrap();
        bytes
    }

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, std::sync::Arc<dyn SegmentFile>) {
        let dir = tempfile::tempdir().unwrap();
        let io = FsSegmentIo::open(dir.path()).unwrap();
        let file = io.open("f", true).unwrap();
        crate::io::write_all_at(&*file, bytes, 0).unwrap();
        (dir, file)
    }

    #[test]
    fn walk_finds_the_valid_batches_after_damage_and_counts_what_is_damaged() {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for i in 0..6 {
            starts.push(bytes.len() as u64);
            bytes.extend(batch_bytes(i * 3, 3));
        }
        let len = bytes.len() as u64;
        // Damage the payload of batch 2 and the CRC of batch 3.
        bytes[starts[2] as usize + 70] ^= 1;
        bytes[starts[3] as usize + 18] ^= 1;
        let (_dir, file) = file_with(&bytes);
        let mut chunks = Chunks::new(&*file, "f", len);
        let regions = walk_from(&mut chunks, 0, 0).unwrap();
        assert_eq!(regions.len(), 3, "{regions:?}");
        assert!(matches!(
            regions[0],
            Region::Batches {
                start: 0,
                base_offset: 0,
                next_offset: 6,
                batches: 2,
                ..
            }
        ));
        let Region::Damaged(d) = &regions[1] else {
            panic!("{regions:?}")
        };
        assert_eq!((d.start, d.end), (starts[2], starts[4]));
        assert_eq!((d.expected_offset, d.resumes_at), (6, Some(12)));
        assert_eq!((d.records, d.records_exact, d.zeros), (6, true, false));
        assert!(d.reason.contains("CRC"), "{}", d.reason);
        assert!(matches!(
            regions[2],
            Region::Batches {
                base_offset: 12,
                next_offset: 18,
                batches: 2,
                ..
            }
        ));
    }

    #[test]
    fn a_torn_tail_and_a_zero_tail_are_told_apart() {
        let mut bytes = batch_bytes(0, 2);
        let whole = bytes.len() as u64;
        let torn = batch_bytes(2, 5);
        bytes.extend_from_slice(&torn[..torn.len() - 7]);
        let (_dir, file) = file_with(&bytes);
        let mut chunks = Chunks::new(&*file, "f", bytes.len() as u64);
        let regions = walk_from(&mut chunks, 0, 0).unwrap();
        let Region::Damaged(d) = &regions[1] else {
            panic!("{regions:?}")
        };
        assert_eq!(
            (d.start, d.end, d.resumes_at),
            (whole, bytes.len() as u64, None)
        );
        assert_eq!((d.records, d.records_exact, d.zeros), (5, true, false));

        let mut zeroed = batch_bytes(0, 2);
        zeroed.resize(zeroed.len() + 4096, 0);
        let (_dir, file) = file_with(&zeroed);
        let mut chunks = Chunks::new(&*file, "f", zeroed.len() as u64);
        let regions = walk_from(&mut chunks, 0, 0).unwrap();
        let Region::Damaged(d) = &regions[1] else {
            panic!("{regions:?}")
        };
        assert!(d.zeros);
        assert_eq!((d.records, d.records_exact), (0, false));
    }

    #[test]
    fn a_flipped_base_offset_is_damage_and_the_walk_resumes_after_that_batch() {
        let mut bytes = Vec::new();
        for i in 0..3 {
            bytes.extend(batch_bytes(i * 2, 2));
        }
        let second = batch_bytes(0, 2).len();
        bytes[second + 7] ^= 0x10; // base offset 2 -> 18: outside the CRC
        let (_dir, file) = file_with(&bytes);
        let mut chunks = Chunks::new(&*file, "f", bytes.len() as u64);
        let regions = walk_from(&mut chunks, 0, 0).unwrap();
        let Region::Damaged(d) = &regions[1] else {
            panic!("{regions:?}")
        };
        assert_eq!((d.start, d.end), (second as u64, 2 * second as u64));
        assert_eq!((d.expected_offset, d.resumes_at), (2, Some(4)));
        assert!(d.reason.contains("base offset 18 where 2"), "{}", d.reason);
    }
}
