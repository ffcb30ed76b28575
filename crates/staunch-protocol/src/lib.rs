//! The Kafka wire protocol as Staunch speaks it, without any I/O.
//!
//! The message types and their encodings come from the `kafka-protocol` crate; this crate adds
//! what a server needs around them:
//!
//! - [`consumer_protocol`]: the subscription and assignment payloads consumers exchange through
//!   the group protocol;
//! - [`frame`]: the 4-byte size prefix, with a maximum checked *before* anything is allocated;
//! - [`versions`]: which API keys and versions Staunch implements, and the `ApiVersions` answer;
//! - [`request`]: decoding a request frame into header and body, with errors that still carry the
//!   correlation id so the server can answer (or close) cleanly;
//! - [`response`]: encoding a response with the right header version, size-prefixed;
//! - [`sasl`]: the PLAIN and SCRAM mechanisms, for the broker and the client.
//!
//! Nothing here panics on bytes from the network: every failure is an error value.

pub mod consumer_protocol;
pub mod frame;
pub mod request;
pub mod response;
pub mod sasl;
pub mod versions;

pub use kafka_protocol;

pub use frame::{DEFAULT_MAX_FRAME_BYTES, FrameError, frame_length};
pub use request::{
    DECODED_BYTES_PER_FRAME_BYTE, DecodeError, MAX_DECODED_BYTES, MIN_DECODED_BYTES, Request,
    decode_request, decoded_bytes_limit, encode_request,
};
pub use response::{EncodeError, decode_response, encode_response};
pub use versions::{SUPPORTED_APIS, api_versions_response, supported_range};
