//! Small files beside the segments: the persisted index of a closed segment, the
//! clean-shutdown marker, the truncation intent and the recovery point. Each is written atomically (temp file, fsync, rename, fsync dir) and
//! carries a CRC-32C, so a torn or stale one is detected and ignored — the log then falls back
//! to scanning, never to trusting bad metadata.
//!
//! Index file (`<base>.index`), big-endian:
//! `"STIX" | version u8 | base i64 | size u64 | next_offset i64 | max_timestamp i64 |
//!  last_append_ms i64 |
//!  count u32 | count × (offset i64, position u32, max_ts_before i64) | crc32c u32`
//!
//! Clean-shutdown marker (`clean-shutdown`):
//! `"STCS" | version u8 | log_end i64 | active_base i64 | active_size u64 | crc32c u32`
//!
//! Truncation intent (`truncate-intent`), present only while a truncation is in progress:
//! `"STTI" | version u8 | target offset i64 | crc32c u32`
//!
//! Recovery point (`recovery-point`), Kafka's "recovery point offset" kept per log:
//! `"STRP" | version u8 | offset i64 | unsynced_window u64 | crc32c u32` — every record below
//! `offset` was on disk when the file was written, and (if `unsynced_window` is not 0) the log
//! that wrote it never had more than `unsynced_window` bytes written but not yet fsynced.

use super::segment::{IndexEntry, Segment};
use staunch_core::Offset;

const INDEX_MAGIC: &[u8; 4] = b"STIX";
const MARKER_MAGIC: &[u8; 4] = b"STCS";
const INTENT_MAGIC: &[u8; 4] = b"STTI";
const RECOVERY_POINT_MAGIC: &[u8; 4] = b"STRP";
const VERSION: u8 = 1;

/// File name of the clean-shutdown marker.
pub(crate) const CLEAN_SHUTDOWN: &str = "clean-shutdown";

/// File name of the truncation intent.
pub(crate) const TRUNCATE_INTENT: &str = "truncate-intent";

/// File name of the recovery point.
pub(crate) const RECOVERY_POINT: &str = "recovery-point";

/// What the recovery point records; see the module docs and the `recovery` module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecoveryPoint {
    /// Every record below this offset was durable when the file was written.
    pub(crate) offset: Offset,
    /// The most bytes the writing log ever had written but not fsynced (flush `always`), or 0
    /// if it had no such bound (flush `interval` / `os`).
    pub(crate) unsynced_window: u64,
}

/// A segment's extent and index as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexFile {
    pub(crate) base: Offset,
    pub(crate) size: u64,
    pub(crate) next_offset: Offset,
    pub(crate) max_timestamp: i64,
    pub(crate) last_append_ms: i64,
    pub(crate) entries: Vec<IndexEntry>,
}

/// What the clean-shutdown marker records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanShutdown {
    pub(crate) log_end: Offset,
    pub(crate) active_base: Offset,
    pub(crate) active_size: u64,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.buf.len() < N {
            return None;
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[..N]);
        self.buf = &self.buf[N..];
        Some(out)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take::<8>().map(i64::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_be_bytes)
    }
}

fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The body of `bytes` if its trailing CRC matches and it starts with `magic` + version.
fn unseal<'a>(bytes: &'a [u8], magic: &[u8; 4]) -> Option<&'a [u8]> {
    if bytes.len() < 9 {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return None;
    }
    if &body[..4] != magic || body[4] != VERSION {
        return None;
    }
    Some(&body[5..])
}

pub(crate) fn encode_index(segment: &Segment) -> Vec<u8> {
    let mut out = Vec::with_capacity(53 + segment.index.len() * 20);
    out.extend_from_slice(INDEX_MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&segment.base.to_be_bytes());
    out.extend_from_slice(&segment.size.to_be_bytes());
    out.extend_from_slice(&segment.next_offset.to_be_bytes());
    out.extend_from_slice(&segment.max_timestamp.to_be_bytes());
    out.extend_from_slice(&segment.last_append_ms.to_be_bytes());
    out.extend_from_slice(&(segment.index.len() as u32).to_be_bytes());
    for e in &segment.index {
        out.extend_from_slice(&e.offset.to_be_bytes());
        out.extend_from_slice(&e.position.to_be_bytes());
        out.extend_from_slice(&e.max_ts_before.to_be_bytes());
    }
    seal(out)
}

pub(crate) fn decode_index(bytes: &[u8]) -> Option<IndexFile> {
    let mut r = Reader {
        buf: unseal(bytes, INDEX_MAGIC)?,
    };
    let base = r.i64()?;
    let size = r.u64()?;
    let next_offset = r.i64()?;
    let max_timestamp = r.i64()?;
    let last_append_ms = r.i64()?;
    let count = r.u32()? as usize;
    if r.buf.len() != count.checked_mul(20)? {
        return None;
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(IndexEntry {
            offset: r.i64()?,
            position: r.u32()?,
            max_ts_before: r.i64()?,
        });
    }
    let sorted = entries
        .windows(2)
        .all(|w| w[0].offset < w[1].offset && w[0].position < w[1].position);
    let in_bounds = entries
        .iter()
        .all(|e| u64::from(e.position) < size.max(1) && e.offset >= base && e.offset < next_offset);
    (sorted && in_bounds && next_offset >= base).then_some(IndexFile {
        base,
        size,
        next_offset,
        max_timestamp,
        last_append_ms,
        entries,
    })
}

pub(crate) fn encode_clean_shutdown(m: &CleanShutdown) -> Vec<u8> {
    let mut out = Vec::with_capacity(33);
    out.extend_from_slice(MARKER_MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&m.log_end.to_be_bytes());
    out.extend_from_slice(&m.active_base.to_be_bytes());
    out.extend_from_slice(&m.active_size.to_be_bytes());
    seal(out)
}

pub(crate) fn decode_clean_shutdown(bytes: &[u8]) -> Option<CleanShutdown> {
    let mut r = Reader {
        buf: unseal(bytes, MARKER_MAGIC)?,
    };
    let m = CleanShutdown {
        log_end: r.i64()?,
        active_base: r.i64()?,
        active_size: r.u64()?,
    };
    r.buf.is_empty().then_some(m)
}

pub(crate) fn encode_truncate_intent(target: Offset) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.extend_from_slice(INTENT_MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&target.to_be_bytes());
    seal(out)
}

pub(crate) fn decode_truncate_intent(bytes: &[u8]) -> Option<Offset> {
    let mut r = Reader {
        buf: unseal(bytes, INTENT_MAGIC)?,
    };
    let target = r.i64()?;
    r.buf.is_empty().then_some(target)
}

pub(crate) fn encode_recovery_point(point: &RecoveryPoint) -> Vec<u8> {
    let mut out = Vec::with_capacity(25);
    out.extend_from_slice(RECOVERY_POINT_MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&point.offset.to_be_bytes());
    out.extend_from_slice(&point.unsynced_window.to_be_bytes());
    seal(out)
}

pub(crate) fn decode_recovery_point(bytes: &[u8]) -> Option<RecoveryPoint> {
    let mut r = Reader {
        buf: unseal(bytes, RECOVERY_POINT_MAGIC)?,
    };
    let point = RecoveryPoint {
        offset: r.i64()?,
        unsynced_window: r.u64()?,
    };
    (r.buf.is_empty() && point.offset >= 0).then_some(point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_and_rejects_any_flipped_bit() {
        let m = CleanShutdown {
            log_end: 77,
            active_base: 50,
            active_size: 4096,
        };
        let bytes = encode_clean_shutdown(&m);
        assert_eq!(decode_clean_shutdown(&bytes), Some(m));
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(decode_clean_shutdown(&bad), None);
        }
        assert_eq!(decode_clean_shutdown(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn recovery_point_round_trips_and_rejects_any_flipped_bit() {
        let point = RecoveryPoint {
            offset: 1 << 40,
            unsynced_window: 16 << 20,
        };
        let bytes = encode_recovery_point(&point);
        assert_eq!(decode_recovery_point(&bytes), Some(point));
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(decode_recovery_point(&bad), None, "bit {i}");
        }
        assert_eq!(decode_recovery_point(&bytes[..bytes.len() - 1]), None);
        // Another file's bytes with a valid CRC are not a recovery point.
        assert_eq!(decode_recovery_point(&encode_truncate_intent(5)), None);
    }

    #[test]
    fn truncate_intent_round_trips() {
        assert_eq!(
            decode_truncate_intent(&encode_truncate_intent(-3)),
            Some(-3)
        );
        assert_eq!(
            decode_truncate_intent(&encode_truncate_intent(1 << 40)),
            Some(1 << 40)
        );
        assert_eq!(decode_truncate_intent(b"STTI"), None);
    }
}
