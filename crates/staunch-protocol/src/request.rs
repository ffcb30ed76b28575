//! Request frames: decoding what a client sent, and encoding what a client sends.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::types::{DecodeLimitExceeded, with_decoded_bytes_limit};
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
    /// Decoding the frame would take more memory than [`decoded_bytes_limit`] allows for its
    /// size: far more elements per byte than any real client sends.
    #[error(
        "{api_key:?} v{api_version} request refused: decoding its {frame_len}-byte frame would take more than {limit} bytes of memory"
    )]
    DecodedTooLarge {
        /// The API.
        api_key: ApiKey,
        /// The version sent.
        api_version: i16,
        /// The correlation id sent.
        correlation_id: i32,
        /// The frame's length.
        frame_len: usize,
        /// The limit it exceeded ([`decoded_bytes_limit`] of `frame_len`).
        limit: usize,
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

/// The most memory the decoded form of a frame may take, whatever the frame: 64 MiB.
///
/// The largest legitimate requests decode to a small part of it: a Fetch or Produce for
/// 100,000 partitions to ~10 MiB, a Metadata request for 100,000 topics to ~7 MiB (see the
/// tests), while a Produce carrying 100 MiB of records is a handful of elements (its record
/// batches stay slices of the frame). A frame of tiny elements, on the other hand, decodes to
/// ~40 times its size: 4 GB for a 100 MiB frame without this limit.
pub const MAX_DECODED_BYTES: usize = 64 << 20;

/// Decoded bytes allowed per byte of a frame, for frames too small to reach
/// [`MAX_DECODED_BYTES`]. Real requests decode to a few times their size; the densest frames
/// of minimal elements in any supported API (LeaveGroup v4 members of 3 bytes each, 120
/// bytes decoded) reach 40, so nothing a client can encode without unknown tagged fields is
/// refused below [`MAX_DECODED_BYTES`].
pub const DECODED_BYTES_PER_FRAME_BYTE: usize = 47;

/// The least memory the decoded form of a frame is allowed, however small the frame: 16 KiB,
/// room for a few dozen unknown tagged fields (~540 bytes each), which a client newer than
/// the codec may add to any request.
pub const MIN_DECODED_BYTES: usize = 16 << 10;

/// The most memory [`decode_request`] lets the decoded form of a `frame_len`-byte frame
/// take (its vectors and unknown tagged fields, with the allocator's overhead; strings and
/// record batches are slices of the frame): [`DECODED_BYTES_PER_FRAME_BYTE`] per byte, at
/// least [`MIN_DECODED_BYTES`] and at most [`MAX_DECODED_BYTES`]. A frame with its decoded
/// form therefore takes at most `frame_len + decoded_bytes_limit(frame_len)`, which is what
/// the server charges for it.
pub fn decoded_bytes_limit(frame_len: usize) -> usize {
    frame_len
        .saturating_mul(DECODED_BYTES_PER_FRAME_BYTE)
        .clamp(MIN_DECODED_BYTES, MAX_DECODED_BYTES)
}

/// Decodes one request frame (the bytes after the size prefix).
///
/// Never panics and never lets the decoded form take more than
/// [`decoded_bytes_limit`]`(frame.len())` bytes on hostile input: the codec's length prefixes
/// are bounded by the bytes left, and every array and unknown tagged field is charged against
/// that limit before it is allocated (see `vendor/kafka-protocol/PATCHES.md`); past the limit
/// the frame is refused with [`DecodeError::DecodedTooLarge`]. A panic inside the codec, should
/// one exist, is caught and reported as [`DecodeError::Malformed`].
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
    let frame_len = frame.len();
    let limit = decoded_bytes_limit(frame_len);
    let mut buf = frame;
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        with_decoded_bytes_limit(limit, || {
            let header_version = api_key.request_header_version(api_version);
            let header =
                RequestHeader::decode(&mut buf, header_version).map_err(|e| ("header", e))?;
            let body =
                RequestKind::decode(api_key, &mut buf, api_version).map_err(|e| ("body", e))?;
            Ok::<_, (&str, _)>((header, body))
        })
    }));
    let (header, body) = match decoded {
        Ok(Ok(decoded)) => decoded,
        Ok(Err((_, e))) if e.chain().any(|c| c.is::<DecodeLimitExceeded>()) => {
            return Err(DecodeError::DecodedTooLarge {
                api_key,
                api_version,
                correlation_id,
                frame_len,
                limit,
            });
        }
        Ok(Err((part, e))) => return Err(malformed(format!("{part}: {e:#}"))),
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

    /// A LeaveGroup v4 frame (no size prefix) of `members` minimal members: an empty member
    /// id, a null group instance id and, with `unknown_tag`, one empty unknown tagged field
    /// (tag 7), else none. 3 (or 5) bytes each on the wire.
    fn leave_group_frame(members: usize, unknown_tag: bool) -> Bytes {
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::LeaveGroup as i16);
        frame.put_i16(4);
        frame.put_i32(9); // correlation id
        frame.put_i16(-1); // null client id
        frame.put_u8(0); // header tagged fields
        frame.put_slice(&[2, b'g']); // group id "g"
        let mut count = members as u64 + 1; // compact array: count + 1, as a varint
        while count >= 0x80 {
            frame.put_u8((count as u8) | 0x80);
            count >>= 7;
        }
        frame.put_u8(count as u8);
        for _ in 0..members {
            if unknown_tag {
                frame.put_slice(&[1, 0, 1, 7, 0]);
            } else {
                frame.put_slice(&[1, 0, 0]);
            }
        }
        frame.put_u8(0); // body tagged fields
        frame.freeze()
    }

    /// The most minimal LeaveGroup v4 members whose vector fits [`MAX_DECODED_BYTES`].
    fn members_at_the_limit() -> usize {
        let member =
            std::mem::size_of::<kafka_protocol::messages::leave_group_request::MemberIdentity>();
        (MAX_DECODED_BYTES - kafka_protocol::protocol::types::ALLOCATION_OVERHEAD) / member
    }

    #[test]
    fn a_frame_decoding_past_the_limit_is_refused_and_one_at_it_decodes() {
        let at_limit = members_at_the_limit();
        // Large enough that the limit is MAX_DECODED_BYTES, not the frame-proportional one.
        assert!(decoded_bytes_limit(3 * at_limit) == MAX_DECODED_BYTES);

        let request = decode_request(leave_group_frame(at_limit, false)).unwrap();
        let RequestKind::LeaveGroup(body) = request.body else {
            panic!("decoded as {:?}", request.api_key);
        };
        assert_eq!(body.members.len(), at_limit);
        drop(body);

        let over = leave_group_frame(at_limit + 1, false);
        let frame_len = over.len();
        assert_eq!(
            decode_request(over).unwrap_err(),
            DecodeError::DecodedTooLarge {
                api_key: ApiKey::LeaveGroup,
                api_version: 4,
                correlation_id: 9,
                frame_len,
                limit: MAX_DECODED_BYTES,
            }
        );
        // The limit applied to that one decode only: a small request decodes as before.
        round_trips_a_request();
    }

    #[test]
    fn unknown_tagged_fields_count_against_the_limit() {
        // 1,000 members take ~120 KB decoded: within 47 x the 3 KB frame without tagged fields,
        // but each unknown tagged field adds a B-tree node (~540 bytes) for 2 bytes of frame:
        // ~660 KB for a 5 KB frame.
        assert!(decode_request(leave_group_frame(1000, false)).is_ok());
        let tagged = leave_group_frame(1000, true);
        let limit = decoded_bytes_limit(tagged.len());
        assert!(matches!(
            decode_request(tagged),
            Err(DecodeError::DecodedTooLarge { limit: l, .. }) if l == limit
        ));
        // A few of them, as a newer client might send, are fine even in a tiny frame.
        assert!(decode_request(leave_group_frame(3, true)).is_ok());
    }

    /// The largest legitimate requests decode well within the limit: 100,000 partitions in a
    /// Fetch, a Produce (small batches, so the frame is small for its element count), an
    /// OffsetCommit and a ListOffsets, and 100,000 topics in a Metadata request.
    #[test]
    fn requests_for_a_hundred_thousand_partitions_decode() {
        use kafka_protocol::messages::{
            FetchRequest, ListOffsetsRequest, OffsetCommitRequest, ProduceRequest, TopicName,
            fetch_request, list_offsets_request, metadata_request, offset_commit_request,
            produce_request,
        };
        const TOPICS: usize = 1000;
        const PARTITIONS: i32 = 100;
        let name = |t: usize| TopicName(StrBytes::from_string(format!("orders-{t:05}")));
        let batch = Bytes::from(vec![0u8; 70]); // the size of a one-record batch
        let fetch = FetchRequest::default().with_topics(
            (0..TOPICS)
                .map(|t| {
                    fetch_request::FetchTopic::default()
                        .with_topic_id(uuid::Uuid::from_u128(t as u128 + 1))
                        .with_topic(name(t))
                        .with_partitions(
                            (0..PARTITIONS)
                                .map(|p| fetch_request::FetchPartition::default().with_partition(p))
                                .collect(),
                        )
                })
                .collect(),
        );
        let produce = ProduceRequest::default().with_topic_data(
            (0..TOPICS)
                .map(|t| {
                    produce_request::TopicProduceData::default()
                        .with_name(name(t))
                        .with_partition_data(
                            (0..PARTITIONS)
                                .map(|p| {
                                    produce_request::PartitionProduceData::default()
                                        .with_index(p)
                                        .with_records(Some(batch.clone()))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
        let commit = OffsetCommitRequest::default()
            .with_group_id(StrBytes::from_static_str("group").into())
            .with_topics(
                (0..TOPICS)
                    .map(|t| {
                        offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(name(t))
                            .with_partitions(
                                (0..PARTITIONS)
                                    .map(|p| {
                                        offset_commit_request::OffsetCommitRequestPartition::default()
                                            .with_partition_index(p)
                                            .with_committed_metadata(Some(StrBytes::new()))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let list = ListOffsetsRequest::default().with_topics(
            (0..TOPICS)
                .map(|t| {
                    list_offsets_request::ListOffsetsTopic::default()
                        .with_name(name(t))
                        .with_partitions(
                            (0..PARTITIONS)
                                .map(|p| {
                                    list_offsets_request::ListOffsetsPartition::default()
                                        .with_partition_index(p)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
        let metadata = |version: i16| {
            MetadataRequest::default().with_topics(Some(
                (0..TOPICS * PARTITIONS as usize)
                    .map(|t| {
                        let topic = metadata_request::MetadataRequestTopic::default();
                        if version >= 10 {
                            topic.with_topic_id(uuid::Uuid::from_u128(t as u128 + 1))
                        } else {
                            topic.with_name(Some(name(t)))
                        }
                    })
                    .collect(),
            ))
        };
        let requests = [
            (ApiKey::Fetch, 12, RequestKind::Fetch(fetch.clone())),
            (ApiKey::Fetch, 4, RequestKind::Fetch(fetch)),
            (ApiKey::Produce, 9, RequestKind::Produce(produce.clone())),
            (ApiKey::Produce, 3, RequestKind::Produce(produce)),
            (
                ApiKey::OffsetCommit,
                8,
                RequestKind::OffsetCommit(commit.clone()),
            ),
            (ApiKey::OffsetCommit, 2, RequestKind::OffsetCommit(commit)),
            (ApiKey::ListOffsets, 7, RequestKind::ListOffsets(list)),
            (ApiKey::Metadata, 1, RequestKind::Metadata(metadata(1))),
            (ApiKey::Metadata, 12, RequestKind::Metadata(metadata(12))),
        ];
        for (key, version, body) in requests {
            let frame = frame_of(key, version, body);
            let len = frame.len();
            let decoded = decode_request(frame);
            assert!(
                decoded.is_ok(),
                "{key:?} v{version} of {len} bytes: {:?}",
                decoded.err()
            );
        }
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
