//! Zig-zag variable-length integers as Kafka's v2 records use them (protobuf encoding).

/// Appends `value` zig-zag encoded.
pub(crate) fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one zig-zag varint of at most 10 bytes from the front of `buf`, returning the value and
/// the bytes it used, or `None` if `buf` ends first or the encoding is longer than 64 bits.
pub(crate) fn get_varlong(buf: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, byte) in buf.iter().take(10).enumerate() {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i == 9 && *byte > 1 {
                return None;
            }
            let value = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Some((value, i + 1));
        }
    }
    None
}

/// Reads one zig-zag varint that must fit in an `i32`.
pub(crate) fn get_varint(buf: &[u8]) -> Option<(i32, usize)> {
    let (v, n) = get_varlong(buf)?;
    i32::try_from(v).ok().map(|v| (v, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let mut out = Vec::new();
        put_varlong(&mut out, 0);
        put_varlong(&mut out, -1);
        put_varlong(&mut out, 1);
        put_varlong(&mut out, 300);
        assert_eq!(out, vec![0x00, 0x01, 0x02, 0xd8, 0x04]);
    }

    #[test]
    fn rejects_truncated_and_overlong() {
        assert_eq!(get_varlong(&[0x80]), None);
        assert_eq!(get_varlong(&[0xff; 11]), None);
    }

    proptest! {
        #[test]
        fn round_trips(v in any::<i64>()) {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            prop_assert_eq!(get_varlong(&out), Some((v, out.len())));
        }
    }
}
