//! Response frames: encoding what the server answers, and decoding it on the client side.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// A message could not be encoded (a value out of the range its version allows, e.g. a null
/// where the version needs a string). This is a bug on the encoding side, never input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("encoding failed: {0}")]
pub struct EncodeError(pub String);

/// Encodes a response as a size-prefixed frame with the header version `api_key` and
/// `api_version` call for.
pub fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, api_key.response_header_version(api_version))
        .map_err(|e| EncodeError(format!("{api_key:?} response header: {e:#}")))?;
    body.encode(&mut buf, api_version)
        .map_err(|e| EncodeError(format!("{api_key:?} v{api_version} response: {e:#}")))?;
    finish_frame(buf)
}

/// Writes the size prefix into the first four bytes of `buf`.
pub(crate) fn finish_frame(mut buf: BytesMut) -> Result<Bytes, EncodeError> {
    let len = i32::try_from(buf.len() - 4)
        .map_err(|_| EncodeError(format!("frame of {} bytes is too large", buf.len())))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Decodes a response frame (the bytes after the size prefix) for a request of `api_key` at
/// `api_version`; returns the correlation id and the body.
pub fn decode_response(
    api_key: ApiKey,
    api_version: i16,
    mut frame: Bytes,
) -> Result<(i32, ResponseKind), String> {
    let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(api_version))
        .map_err(|e| format!("{api_key:?} response header: {e:#}"))?;
    let body = ResponseKind::decode(api_key, &mut frame, api_version)
        .map_err(|e| format!("{api_key:?} v{api_version} response: {e:#}"))?;
    if frame.has_remaining() {
        return Err(format!(
            "{api_key:?} v{api_version} response has {} trailing bytes",
            frame.remaining()
        ));
    }
    Ok((header.correlation_id, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::api_versions_response;

    #[test]
    fn api_versions_v3_has_a_v0_header_and_no_default_tagged_fields() {
        let body = ResponseKind::ApiVersions(api_versions_response(0));
        let frame = encode_response(ApiKey::ApiVersions, 3, 5, &body).unwrap();
        let len = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        // v0 header: just the correlation id, no tagged-field byte.
        assert_eq!(&frame[4..8], &5i32.to_be_bytes());
        // The body ends with an empty tagged-field section: a single zero byte.
        assert_eq!(frame[frame.len() - 1], 0);
        let (correlation_id, decoded) =
            decode_response(ApiKey::ApiVersions, 3, frame.slice(4..)).unwrap();
        assert_eq!(correlation_id, 5);
        assert_eq!(decoded, body);
    }
}
