//! Test support: the broker side of a connection, scripted by a test (read one request,
//! answer it), for the behaviours a real server will not show on demand.

use std::time::Duration;

use bytes::Bytes;
use staunch_protocol::kafka_protocol::messages::ResponseKind;
use staunch_protocol::{Request, decode_request, encode_response, frame_length};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Client, ClientConfig};

/// The next request on `stream`, or `None` once it is closed or sends garbage.
pub(crate) async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await.ok()?;
    let len = frame_length(prefix, 1 << 20).ok()?;
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.ok()?;
    decode_request(Bytes::from(body)).ok()
}

/// Writes `body` as the answer to `request`.
pub(crate) async fn answer(stream: &mut TcpStream, request: &Request, body: ResponseKind) {
    let frame = encode_response(
        request.api_key,
        request.api_version,
        request.correlation_id,
        &body,
    )
    .unwrap();
    stream.write_all(&frame).await.unwrap();
}

/// A client bootstrapped from `addr` whose requests and connects may take up to `limit`;
/// panics if it cannot connect within `limit`.
pub(crate) async fn client(addr: impl ToString, limit: Duration) -> Client {
    let config = ClientConfig {
        request_timeout: limit,
        connect_timeout: limit,
        ..ClientConfig::default()
    };
    tokio::time::timeout(limit, Client::connect(vec![addr.to_string()], config))
        .await
        .expect("connected in time")
        .expect("connected")
}
