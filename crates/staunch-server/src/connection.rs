//! One client connection: read frames, answer them in order, close on bad input.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use staunch_broker::Broker;
use staunch_protocol::kafka_protocol::messages::{ApiKey, ResponseKind};
use staunch_protocol::{DecodeError, decode_request, encode_response, frame_length};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::ServerConfig;
use crate::handlers::{self, ClientContext};

/// Why a connection ended, for the log line.
enum Close {
    /// The client closed it, or shutdown began between requests.
    Normal,
    /// Something the client sent or did; logged as a warning.
    Client(String),
    /// A local failure (write error, encode bug); logged as an error.
    Local(String),
}

/// Serves one connection until the client closes it, it misbehaves, it idles out, or shutdown
/// begins (the request being handled is answered first).
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Broker,
    config: Arc<ServerConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let context = ClientContext { peer };
    let close = loop {
        if *stop.borrow() {
            break Close::Normal;
        }
        let mut prefix = [0u8; 4];
        let read = tokio::select! {
            read = tokio::time::timeout(config.idle_timeout, reader.read_exact(&mut prefix)) => read,
            _ = stop.changed() => break Close::Normal,
        };
        match read {
            Err(_) => break Close::Client(format!("idle for {:?}", config.idle_timeout)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Close::Normal,
            Ok(Err(e)) => break Close::Client(format!("read failed: {e}")),
            Ok(Ok(_)) => {}
        }
        let len = match frame_length(prefix, config.max_request_bytes) {
            Ok(len) => len,
            Err(e) => break Close::Client(format!("refused request frame: {e}")),
        };
        let mut body = vec![0u8; len];
        match tokio::time::timeout(config.idle_timeout, reader.read_exact(&mut body)).await {
            Err(_) => {
                break Close::Client(format!(
                    "request frame of {len} bytes not completed within {:?}",
                    config.idle_timeout
                ));
            }
            Ok(Err(e)) => {
                break Close::Client(format!("truncated request frame of {len} bytes: {e}"));
            }
            Ok(Ok(_)) => {}
        }
        let answer = match decode_request(Bytes::from(body)) {
            Ok(request) => handlers::handle(&broker, &context, request).await,
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                api_version,
                correlation_id,
                ..
            }) => {
                // Kafka's rule: answer ApiVersions in v0 with UNSUPPORTED_VERSION and the
                // supported ranges, so the client can retry with a version both speak.
                tracing::debug!(%peer, api_version, "ApiVersions at an unsupported version");
                let body = ResponseKind::ApiVersions(staunch_protocol::api_versions_response(
                    staunch_core::ErrorCode::UnsupportedVersion.code(),
                ));
                encode_response(ApiKey::ApiVersions, 0, correlation_id, &body)
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            Err(e) => break Close::Client(e.to_string()),
        };
        match answer {
            Ok(Some(frame)) => {
                if let Err(e) = writer.write_all(&frame).await {
                    break Close::Local(format!("write failed: {e}"));
                }
            }
            Ok(None) => {}
            Err(e) => break Close::Local(e),
        }
    };
    match close {
        Close::Normal => tracing::debug!(%peer, "connection closed"),
        Close::Client(reason) => tracing::warn!(%peer, %reason, "closing connection"),
        Close::Local(reason) => tracing::error!(%peer, %reason, "closing connection"),
    }
    let _ = writer.shutdown().await;
}
