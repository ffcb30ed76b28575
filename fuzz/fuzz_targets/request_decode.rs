//! Arbitrary bytes through the server's request decoding, the way a frame arrives from the
//! network: `decode_request` must return a request or an error, never panic, and never
//! allocate far beyond the frame's size (libFuzzer's `-rss_limit_mb` catches that; the
//! unpatched kafka-protocol 0.18 aborts here within seconds on an array length prefix).
//!
//! The first two bytes pick a supported API and version so most inputs reach body decoding
//! instead of stopping at an unknown key.

#![no_main]

use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use staunch_protocol::{SUPPORTED_APIS, decode_request, supported_range};

fuzz_target!(|data: &[u8]| {
    // As is.
    let _ = decode_request(Bytes::copy_from_slice(data));
    // With a supported key and version in front.
    if data.len() >= 2 {
        let (key, _, _) = SUPPORTED_APIS[data[0] as usize % SUPPORTED_APIS.len()];
        let Some(range) = supported_range(key) else {
            return;
        };
        let span = (range.max - range.min + 1) as u8;
        let version = range.min + i16::from(data[1] % span);
        let mut frame = BytesMut::with_capacity(data.len() + 8);
        frame.put_i16(key as i16);
        frame.put_i16(version);
        frame.put_i32(1);
        frame.put_slice(&data[2..]);
        let _ = decode_request(frame.freeze());
    }
});
