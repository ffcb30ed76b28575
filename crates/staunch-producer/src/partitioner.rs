//! Which partition a record goes to, compatible with Kafka's default partitioner.
//!
//! - an explicit partition on the record wins;
//! - a keyed record goes to `toPositive(murmur2(key)) % partitions`, exactly as the Java client
//!   computes it, so Staunch and Kafka producers agree on where a key lives;
//! - an unkeyed record goes to the topic's *sticky* partition, which changes each time that
//!   partition's batch is closed (KIP-480), optionally skipping partitions that are unavailable.

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`), used by its default
/// partitioner for keyed records.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a key:
/// `toPositive(murmur2(key)) % partitions` (`toPositive` masks the sign bit; it is not `abs`).
/// `partitions` below 1 is treated as 1.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// Picks a new sticky partition among `0..partitions`: uniformly among those `available` says
/// are usable (all of them when none is), avoiding `previous` when there is another choice.
pub(crate) fn pick_sticky(
    rng: &mut fastrand::Rng,
    partitions: i32,
    previous: Option<i32>,
    available: impl Fn(i32) -> bool,
) -> i32 {
    let partitions = partitions.max(1);
    let usable = |p: i32| available(p) && Some(p) != previous;
    let mut count = (0..partitions).filter(|&p| usable(p)).count();
    if count == 0 {
        // Nothing else is available: stay where we were if that is available, else spread.
        if let Some(p) = previous.filter(|&p| p < partitions && available(p)) {
            return p;
        }
        let others = |p: i32| Some(p) != previous || partitions == 1;
        count = (0..partitions).filter(|&p| others(p)).count();
        let nth = rng.usize(..count.max(1));
        return (0..partitions).filter(|&p| others(p)).nth(nth).unwrap_or(0);
    }
    let nth = rng.usize(..count);
    (0..partitions).filter(|&p| usable(p)).nth(nth).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from Apache Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&str, i32); 6] = [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input.as_bytes()), expected, "murmur2({input:?})");
        }
    }

    #[test]
    fn keys_map_to_positive_partitions() {
        // "21" hashes negative: toPositive, not abs.
        assert_eq!(
            partition_for_key(b"21", 3),
            (-973932308i32 & 0x7fff_ffff) % 3
        );
        for key in ["21", "foobar", "abc", ""] {
            assert!((0..7).contains(&partition_for_key(key.as_bytes(), 7)));
        }
    }

    #[test]
    fn sticky_skips_unavailable_and_changes_partition() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let p = pick_sticky(&mut rng, 4, Some(1), |p| p != 0);
            assert!(p == 2 || p == 3, "{p}");
        }
        // Only the previous one is available: keep it.
        assert_eq!(pick_sticky(&mut rng, 3, Some(2), |p| p == 2), 2);
        // Nothing is available: still a valid partition, not the previous one.
        for _ in 0..50 {
            let p = pick_sticky(&mut rng, 3, Some(0), |_| false);
            assert!(p == 1 || p == 2);
        }
        assert_eq!(pick_sticky(&mut rng, 1, Some(0), |_| false), 0);
        let mut seen = [false; 5];
        for _ in 0..500 {
            seen[pick_sticky(&mut rng, 5, None, |_| true) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
