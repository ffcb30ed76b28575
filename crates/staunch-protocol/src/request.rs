//! Request frames: decoding what a client sent, and encoding what a client sends.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::versions::supported_range;

/// A decoded request: who sent it, which API and version, and the body.
#[derive(Debug, Clone)]
pub struct Request {
    /// The API being called.
    pub api_key: ApiKey,
    /// The version of the API the body was encoded with; the response uses the same one.
    pub api_version: i16,
    /// The client's correlation id, echoed in the response.
    pub correlation_id: i32,
    /// The client's self-reported id (`client.id`), if any.
    pub client_id: Option<String>,
    /// The request body.
    pub body: RequestKind,
}

/// Why a request frame could not be decoded. Each variant says what the server can still do:
/// only [`DecodeError::Truncated`] lacks a correlation id to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame is shorter than the fixed part of a request header (8 bytes).
    #[error("request frame of {0} bytes is shorter than a request header")]
    Truncated(usize),
    /// The API key is not one Staunch implements.
    #[error("unsupported API key {api_key} (version {api_version})")]
    UnknownApiKey {
        /// The key sent.
        api_key: i16,
        /// The version sent.
        api_version: i16,
        /// The correlation id sent.
        correlation_id: i32,
    },
    /// The API is implemented, but not at this version.
    #[error("{api_key:?} version {api_version} is not supported (supported: {min}..={max})")]
    UnsupportedVersion {
        /// The API.
        api_key: ApiKey,
        /// The version sent.
        api_version: i16,
        /// The correlation id sent.
        correlation_id: i32,
        /// The lowest supported version.
        min: i16,
        /// The highest supported version.
        max: i16,
    },
    /// The header or body does not decode at the stated version.
    #[error("malformed {api_key:?} v{api_version} request: {reason}")]
    Malformed {
        /// The API.
        api_key: ApiKey,
        /// The version sent.
        api_version: i16,
        /// The correlation id sent.
        correlation_id: i32,
        /// What the decoder reported.
        reason: String,
    },
}

/// Decodes one request frame (the bytes after the size prefix).
///
/// Never panics and never allocates more than the frame's own size on hostile input: the
/// codec's length prefixes are bounded by the bytes left (see `vendor/kafka-protocol`), and a
/// panic inside the codec, should one exist, is caught and reported as
/// [`DecodeError::Malformed`].
pub fn decode_request(frame: Bytes) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::Truncated(frame.len()));
    }
    let mut fixed = &frame[..8];
    let raw_key = fixed.get_i16();
    let api_version = fixed.get_i16();
    let correlation_id = fixed.get_i32();
    let unknown = DecodeError::UnknownApiKey {
        api_key: raw_key,
        api_version,
        correlation_id,
    };
    let Ok(api_key) = ApiKey::try_from(raw_key) else {
        return Err(unknown);
    };
    let Some(range) = supported_range(api_key) else {
        return Err(unknown);
    };
    if api_version < range.min || api_version > range.max {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
            min: range.min,
            max: range.max,
        });
    }
    let malformed = |reason: String| DecodeError::Malformed {
        api_key,
        api_version,
        correlation_id,
        reason,
    };
    let mut buf = frame;
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        let header_version = api_key.request_header_version(api_version);
        let header = RequestHeader::decode(&mut buf, header_version)
            .map_err(|e| format!("header: {e:#}"))?;
        let body = RequestKind::decode(api_key, &mut buf, api_version)
            .map_err(|e| format!("body: {e:#}"))?;
        Ok::<_, String>((header, body))
    }));
    let (header, body) = match decoded {
        Ok(Ok(decoded)) => decoded,
        Ok(Err(reason)) => return Err(malformed(reason)),
        Err(_) => return Err(malformed("the decoder panicked".to_owned())),
    };
    Ok(Request {
        api_key,
        api_version,
        correlation_id,
        client_id: header.client_id.map(|id| id.as_str().to_owned()),
        body,
    })
}

/// Encodes a request as a size-prefixed frame, for clients.
pub fn encode_request(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    client_id: &str,
    body: &RequestKind,
) -> Result<Bytes, crate::EncodeError> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(api_version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_owned())));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, api_key.request_header_version(api_version))
        .map_err(|e| crate::EncodeError(format!("{api_key:?} request header: {e:#}")))?;
    body.encode(&mut buf, api_version)
        .map_err(|e| crate::EncodeError(format!("{api_key:?} v{api_version} request: {e:#}")))?;
    crate::response::finish_frame(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::MetadataRequest;

    fn frame_of(key: ApiKey, version: i16, body: RequestKind) -> Bytes {
        encode_request(key, version, 7, "test", &body)
            .unwrap()
            .slice(4..)
    }

    #[test]
    fn round_trips_a_request() {
        let frame = frame_of(
            ApiKey::Metadata,
            9,
            RequestKind::Metadata(MetadataRequest::default()),
        );
        let request = decode_request(frame).unwrap();
        assert_eq!(request.api_key, ApiKey::Metadata);
        assert_eq!(request.api_version, 9);
        assert_eq!(request.correlation_id, 7);
        assert_eq!(request.client_id.as_deref(), Some("test"));
    }

    #[test]
    fn refuses_unknown_keys_and_versions_with_the_correlation_id() {
        let mut frame = BytesMut::new();
        frame.put_i16(999);
        frame.put_i16(0);
        frame.put_i32(42);
        assert_eq!(
            decode_request(frame.freeze()).unwrap_err(),
            (DecodeError::UnknownApiKey {
                api_key: 999,
                api_version: 0,
                correlation_id: 42
            })
        );
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::Metadata as i16);
        frame.put_i16(99);
        frame.put_i32(43);
        assert!(matches!(
            decode_request(frame.freeze()),
            Err(DecodeError::UnsupportedVersion {
                correlation_id: 43,
                ..
            })
        ));
        assert_eq!(
            decode_request(Bytes::from_static(b"abc")).unwrap_err(),
            DecodeError::Truncated(3)
        );
    }

    #[test]
    fn a_hostile_array_length_is_an_error_not_an_allocation() {
        // Metadata v0 whose topic array claims 54 million entries in a 13-byte frame.
        let frame = Bytes::from_static(&[0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 3, 0x3c, 0x0c]);
        let mut full = BytesMut::from(&frame[..]);
        full.put_u8(0);
        assert!(matches!(
            decode_request(full.freeze()),
            Err(DecodeError::Malformed { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn random_frames_never_panic(key in 0i16..80, version in 0i16..14, body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let mut frame = BytesMut::new();
            frame.put_i16(key);
            frame.put_i16(version);
            frame.put_i32(1);
            frame.put_slice(&body);
            let _ = decode_request(frame.freeze());
        }
    }
}
