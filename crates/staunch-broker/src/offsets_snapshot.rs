//! The committed-offsets snapshot: every live committed offset as of an offset of the offsets
//! log, so that opening the store replays only the records after it.
//!
//! File `offsets.snapshot` in the offsets log's directory, big-endian, strings as `len u32 |
//! UTF-8 bytes`:
//! `"STOS" | version u8 | offset i64 | groups u32 | groups × (group str | n u32 |
//!  n × (topic str | partition i32 | offset i64 | leader_epoch i32 | commit_time_ms i64 |
//!  metadata str)) | crc32c u32`
//!
//! It is written atomically and durably ([`staunch_log::replace_file`]) by the holder of the
//! store's writer lock, when the offsets are what the log says through `offset`: at compaction
//! and at a clean close. The log stays the truth — compaction writes every live offset into
//! the log again before it deletes a segment — so a snapshot that fails to decode, or whose
//! offset is outside the log, is ignored and the whole log replayed.

use crate::byte_reader::ByteReader;
use std::collections::BTreeMap;

use staunch_core::Offset;

use crate::offsets::{CommittedOffset, Groups};

/// The snapshot's file name, in the offsets log's directory.
pub const FILE: &str = "offsets.snapshot";

const MAGIC: &[u8; 4] = b"STOS";
const VERSION: u8 = 1;
/// Header: magic, version, offset, group count.
const HEADER: usize = 4 + 1 + 8 + 4;
/// The fewest bytes a group takes (empty name, count).
const MIN_GROUP: usize = 4 + 4;
/// The fewest bytes an offset takes (empty topic and metadata).
const MIN_OFFSET: usize = 4 + 4 + 8 + 4 + 8 + 4;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The bytes of a snapshot of `groups` as of offsets-log offset `offset`.
pub fn encode(groups: &Groups, offset: Offset) -> Vec<u8> {
    let mut names: Vec<&String> = groups.keys().collect();
    names.sort_unstable();
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&(names.len() as u32).to_be_bytes());
    for name in names {
        let offsets = &groups[name];
        put_str(&mut out, name);
        out.extend_from_slice(&(offsets.len() as u32).to_be_bytes());
        for ((topic, partition), c) in offsets {
            put_str(&mut out, topic);
            out.extend_from_slice(&partition.to_be_bytes());
            out.extend_from_slice(&c.offset.to_be_bytes());
            out.extend_from_slice(&c.leader_epoch.to_be_bytes());
            out.extend_from_slice(&c.commit_time_ms.to_be_bytes());
            put_str(&mut out, &c.metadata);
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The offsets-log offset a snapshot was taken at and the offsets it holds, or why it cannot
/// be trusted (checksum, magic, version, a length or count out of bounds, an empty or repeated
/// entry). Never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<(Offset, Groups), String> {
    let mut r = ByteReader::checksummed(bytes, HEADER)?;
    if r.take(4)? != MAGIC {
        return Err("not a committed-offsets snapshot (magic)".to_owned());
    }
    let [version] = r.array::<1>()?;
    if version != VERSION {
        return Err(format!("format version {version}, not {VERSION}"));
    }
    let offset = r.i64()?;
    if offset < 0 {
        return Err(format!("negative offset {offset}"));
    }
    let mut groups = Groups::new();
    for _ in 0..r.count(MIN_GROUP)? {
        let group = r.str()?;
        let n = r.count(MIN_OFFSET)?;
        if n == 0 {
            return Err(format!("group '{group}' has no offsets"));
        }
        let mut offsets = BTreeMap::new();
        for _ in 0..n {
            let topic = r.str()?;
            let partition = r.i32()?;
            let committed = CommittedOffset {
                offset: r.i64()?,
                leader_epoch: r.i32()?,
                commit_time_ms: r.i64()?,
                metadata: r.str()?,
            };
            if offsets.insert((topic, partition), committed).is_some() {
                return Err(format!("group '{group}' repeats a partition"));
            }
        }
        if groups.insert(group.clone(), offsets).is_some() {
            return Err(format!("group '{group}' is repeated"));
        }
    }
    if r.remaining() > 0 {
        return Err(format!("{} bytes after the last group", r.remaining()));
    }
    Ok((offset, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Groups {
        let mut groups = Groups::new();
        for (g, t, p, o) in [("a", "t", 0, 5), ("a", "t", 1, 7), ("b", "u", 3, 1)] {
            groups.entry(g.to_owned()).or_default().insert(
                (t.to_owned(), p),
                CommittedOffset {
                    offset: o,
                    leader_epoch: 2,
                    metadata: format!("attempt={o}"),
                    commit_time_ms: 9,
                },
            );
        }
        groups
    }

    #[test]
    fn a_snapshot_round_trips_and_refuses_any_damage() {
        let bytes = encode(&groups(), 77);
        assert_eq!(decode(&bytes).unwrap(), (77, groups()));
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "flip of byte {byte} bit {bit}");
            }
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        assert_eq!(
            decode(&encode(&Groups::new(), 0)).unwrap(),
            (0, Groups::new())
        );
    }
}
