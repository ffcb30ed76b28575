//! One connection to one broker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use staunch_protocol::kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use staunch_protocol::kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Request, StrBytes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed or was closed by the broker.
    #[error("connection to {addr} failed: {source}")]
    Io {
        /// The broker.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// No answer within the timeout.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout {
        /// The broker.
        addr: SocketAddr,
        /// The timeout.
        timeout: Duration,
    },
    /// The broker does not support the API at any version this client speaks.
    #[error("broker {addr} does not support {api:?}")]
    Unsupported {
        /// The broker.
        addr: SocketAddr,
        /// The API.
        api: ApiKey,
    },
    /// A message could not be encoded or decoded.
    #[error("protocol error with {addr}: {message}")]
    Protocol {
        /// The broker.
        addr: SocketAddr,
        /// What went wrong.
        message: String,
    },
}

/// A connection to one broker with negotiated API versions. Calls are made one at a time
/// (`&mut self`); the answer to each is read before the next is sent.
#[derive(Debug)]
pub struct Connection {
    addr: SocketAddr,
    stream: TcpStream,
    client_id: String,
    next_correlation_id: i32,
    /// Broker's (min, max) per API key.
    versions: HashMap<i16, (i16, i16)>,
    timeout: Duration,
}

impl Connection {
    /// Connects and negotiates versions with ApiVersions.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout { addr, timeout })?
            .map_err(|source| ClientError::Io { addr, source })?;
        let _ = stream.set_nodelay(true);
        let mut connection = Connection {
            addr,
            stream,
            client_id: client_id.to_owned(),
            next_correlation_id: 0,
            versions: HashMap::new(),
            timeout,
        };
        let versions: ApiVersionsResponse = connection
            .call_at(
                3,
                ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("staunch"))
                    .with_client_software_version(StrBytes::from_static_str(env!(
                        "CARGO_PKG_VERSION"
                    ))),
            )
            .await?;
        connection.versions = versions
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(connection)
    }

    /// The broker's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The highest version of `Req` both sides support.
    pub fn version_for<Req: Request>(&self) -> Result<i16, ClientError> {
        let (min, max) = self
            .versions
            .get(&Req::KEY)
            .copied()
            .ok_or_else(|| self.unsupported::<Req>())?;
        let version = max.min(Req::VERSIONS.max);
        if version < min.max(Req::VERSIONS.min) {
            return Err(self.unsupported::<Req>());
        }
        Ok(version)
    }

    fn unsupported<Req: Request>(&self) -> ClientError {
        ClientError::Unsupported {
            addr: self.addr,
            api: ApiKey::try_from(Req::KEY).unwrap_or(ApiKey::ApiVersions),
        }
    }

    /// Sends `request` at the highest common version and returns the answer.
    pub async fn call<Req: Request>(&mut self, request: Req) -> Result<Req::Response, ClientError> {
        let version = self.version_for::<Req>()?;
        self.call_at(version, request).await
    }

    /// Sends `request` at `version` and returns the answer.
    pub async fn call_at<Req: Request>(
        &mut self,
        version: i16,
        request: Req,
    ) -> Result<Req::Response, ClientError> {
        let correlation_id = self.send_at(version, &request).await?;
        let frame = self.read_frame().await?;
        self.decode_response::<Req>(version, correlation_id, frame)
    }

    /// Sends `request` at `version` without reading an answer (acks 0 produce); returns the
    /// correlation id.
    pub async fn send_at<Req: Request>(
        &mut self,
        version: i16,
        request: &Req,
    ) -> Result<i32, ClientError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(Req::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        let protocol = |message: String| ClientError::Protocol {
            addr: self.addr,
            message,
        };
        header
            .encode(&mut buf, Req::header_version(version))
            .map_err(|e| protocol(format!("encoding request header: {e:#}")))?;
        request
            .encode(&mut buf, version)
            .map_err(|e| protocol(format!("encoding request v{version}: {e:#}")))?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.write_raw(&buf).await?;
        Ok(correlation_id)
    }

    /// Writes raw bytes to the connection (for tests of how a broker handles bad input).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let addr = self.addr;
        tokio::time::timeout(self.timeout, self.stream.write_all(bytes))
            .await
            .map_err(|_| ClientError::Timeout {
                addr,
                timeout: self.timeout,
            })?
            .map_err(|source| ClientError::Io { addr, source })
    }

    /// Reads one size-prefixed frame (the bytes after the prefix).
    pub async fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        let addr = self.addr;
        let timeout = self.timeout;
        let read = async {
            let len = self.stream.read_i32().await?;
            let len = usize::try_from(len)
                .map_err(|_| std::io::Error::other(format!("negative frame size {len}")))?;
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(Bytes::from(body))
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| ClientError::Timeout { addr, timeout })?
            .map_err(|source| ClientError::Io { addr, source })
    }

    fn decode_response<Req: Request>(
        &self,
        version: i16,
        correlation_id: i32,
        mut frame: Bytes,
    ) -> Result<Req::Response, ClientError> {
        let protocol = |message: String| ClientError::Protocol {
            addr: self.addr,
            message,
        };
        let header = ResponseHeader::decode(&mut frame, Req::Response::header_version(version))
            .map_err(|e| protocol(format!("decoding response header: {e:#}")))?;
        if header.correlation_id != correlation_id {
            return Err(protocol(format!(
                "answer has correlation id {}, expected {correlation_id}",
                header.correlation_id
            )));
        }
        Req::Response::decode(&mut frame, version)
            .map_err(|e| protocol(format!("decoding response v{version}: {e:#}")))
    }
}
