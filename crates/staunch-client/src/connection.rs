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
use staunch_protocol::{DEFAULT_MAX_FRAME_BYTES, FrameError, frame_length};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::security::{SaslCredentials, SecurityConfig};
use crate::tls::{self, Stream};
use staunch_protocol::kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use staunch_protocol::sasl::{PlainToken, ScramClient, ScramMechanism};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The request was not written to the connection: it was already dead, or failed before
    /// the request's turn came. The broker never saw it.
    #[error("request not sent to {addr}: {reason}")]
    NotSent {
        /// The broker.
        addr: SocketAddr,
        /// Why not.
        reason: String,
    },
    /// The request was written (or being written) but no answer arrived: the connection
    /// failed or the request timed out. The broker may have acted on it.
    #[error("no answer from {addr}: {reason}")]
    NoAnswer {
        /// The broker.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// No bootstrap or known broker could be reached (or none answered) for a cluster-wide
    /// call such as metadata.
    #[error("no broker of {brokers} reachable: {reason}")]
    Unreachable {
        /// The addresses tried.
        brokers: String,
        /// The last failure.
        reason: String,
    },
    /// The client configuration is unusable (e.g. no bootstrap address, a zero timeout).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The broker refused the SASL authentication (wrong user name or password, mechanism
    /// not enabled), or its answers did not prove it knows the credential. Retrying with the
    /// same settings does not help.
    #[error(
        "SASL authentication with {mechanism} as user {username:?} at {addr} failed: {message}"
    )]
    Authentication {
        /// The broker.
        addr: SocketAddr,
        /// The mechanism used.
        mechanism: staunch_core::SaslMechanism,
        /// The user name.
        username: String,
        /// The broker's (or this client's) explanation.
        message: String,
    },
}

/// A connection to one broker with negotiated API versions. Calls are made one at a time
/// (`&mut self`); the answer to each is read before the next is sent.
#[derive(Debug)]
pub struct Connection {
    addr: SocketAddr,
    stream: Stream,
    client_id: String,
    next_correlation_id: i32,
    /// Broker's (min, max) per API key.
    versions: HashMap<i16, (i16, i16)>,
    timeout: Duration,
    max_frame_bytes: usize,
}

impl Connection {
    /// Connects over plain TCP and negotiates versions with ApiVersions.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let host = addr.ip().to_string();
        Connection::connect_secured(addr, &host, client_id, timeout, &SecurityConfig::default())
            .await
    }

    /// Connects as `security` says, negotiates versions with ApiVersions and, on a SASL
    /// protocol, authenticates; `host` is the name the broker's certificate must carry (on
    /// SSL and SASL_SSL). The TCP connect and the TLS handshake are each bounded by
    /// `timeout`.
    pub async fn connect_secured(
        addr: SocketAddr,
        host: &str,
        client_id: &str,
        timeout: Duration,
        security: &SecurityConfig,
    ) -> Result<Self, ClientError> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout { addr, timeout })?
            .map_err(|source| ClientError::Io { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let stream = if security.protocol.uses_tls() {
            let tls = tokio::time::timeout(timeout, tls::handshake(tcp, addr, host, &security.tls))
                .await
                .map_err(|_| ClientError::Timeout { addr, timeout })??;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Tcp(tcp)
        };
        let mut connection = Connection {
            addr,
            stream,
            client_id: client_id.to_owned(),
            next_correlation_id: 0,
            versions: HashMap::new(),
            timeout,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
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
        if security.protocol.uses_sasl() {
            let credentials = security.sasl.as_ref().ok_or_else(|| {
                ClientError::Config(format!(
                    "security protocol {} needs SASL credentials (sasl.mechanism, sasl.username, sasl.password)",
                    security.protocol
                ))
            })?;
            connection.authenticate(credentials).await?;
        }
        Ok(connection)
    }

    /// Authenticates with SaslHandshake v1 and SaslAuthenticate (PLAIN or SCRAM).
    async fn authenticate(&mut self, credentials: &SaslCredentials) -> Result<(), ClientError> {
        let mechanism = credentials.mechanism;
        let failed = |addr: SocketAddr, message: String| ClientError::Authentication {
            addr,
            mechanism,
            username: credentials.username.clone(),
            message,
        };
        let handshake: SaslHandshakeResponse = self
            .call_at(
                1,
                SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_string(mechanism.name().to_owned())),
            )
            .await?;
        if handshake.error_code != 0 {
            let enabled: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(failed(
                self.addr,
                format!(
                    "{} (the broker enables {})",
                    staunch_core::ErrorCode::from_code(handshake.error_code),
                    enabled.join(", ")
                ),
            ));
        }
        let version = self.version_for::<SaslAuthenticateRequest>()?;
        let message = match ScramMechanism::of(mechanism) {
            None => {
                let token = PlainToken {
                    username: credentials.username.clone(),
                    password: credentials.password.clone(),
                };
                self.sasl_step(version, token.encode()).await?.err()
            }
            Some(scram) => {
                let (mut client, first) =
                    ScramClient::start(scram, &credentials.username, &credentials.password);
                match self.sasl_step(version, first).await? {
                    Err(message) => Some(message),
                    Ok(server_first) => match client.respond(&server_first) {
                        Err(e) => Some(e.to_string()),
                        Ok(last) => match self.sasl_step(version, last).await? {
                            Err(message) => Some(message),
                            Ok(server_final) => client
                                .verify(&server_final)
                                .err()
                                .map(|e| format!("the broker's proof is wrong: {e}")),
                        },
                    },
                }
            }
        };
        match message {
            None => Ok(()),
            Some(message) => Err(failed(self.addr, message)),
        }
    }

    /// One SaslAuthenticate: the broker's token, or its error.
    async fn sasl_step(
        &mut self,
        version: i16,
        token: Vec<u8>,
    ) -> Result<Result<Bytes, String>, ClientError> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let answer: SaslAuthenticateResponse = self.call_at(version, request).await?;
        if answer.error_code != 0 {
            let code = staunch_core::ErrorCode::from_code(answer.error_code);
            return Ok(Err(answer
                .error_message
                .map(|m| format!("{code}: {}", m.as_str()))
                .unwrap_or_else(|| code.to_string())));
        }
        Ok(Ok(answer.auth_bytes))
    }

    /// The broker's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the largest answer frame accepted (default 100 MiB); a larger size prefix fails the
    /// read with [`ClientError::Protocol`] before anything is allocated.
    pub fn set_max_frame_bytes(&mut self, max: usize) {
        self.max_frame_bytes = max;
    }

    /// The highest version of `Req` both sides support.
    pub fn version_for<Req: Request>(&self) -> Result<i16, ClientError> {
        negotiated_version::<Req>(self.addr, &self.versions)
    }

    /// Takes the connection apart after the handshake: the socket, the broker's version
    /// ranges and the next correlation id.
    pub(crate) fn into_parts(self) -> (Stream, HashMap<i16, (i16, i16)>, i32) {
        (self.stream, self.versions, self.next_correlation_id)
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
        let frame =
            encode_request_frame(self.addr, &self.client_id, version, correlation_id, request)?;
        self.write_raw(&frame).await?;
        Ok(correlation_id)
    }

    /// Writes raw bytes to the connection (for tests of how a broker handles bad input).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let addr = self.addr;
        let stream = &mut self.stream;
        let write = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        tokio::time::timeout(self.timeout, write)
            .await
            .map_err(|_| ClientError::Timeout {
                addr,
                timeout: self.timeout,
            })?
            .map_err(|source| ClientError::Io { addr, source })
    }

    /// Reads one size-prefixed frame (the bytes after the prefix). A size prefix that is
    /// negative or above the maximum (see [`Connection::set_max_frame_bytes`]) is refused
    /// before allocating.
    pub async fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        let addr = self.addr;
        let timeout = self.timeout;
        let max = self.max_frame_bytes;
        let read = async {
            let mut prefix = [0u8; 4];
            self.stream.read_exact(&mut prefix).await?;
            let len = frame_length(prefix, max).map_err(std::io::Error::other)?;
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(Bytes::from(body))
        };
        let read = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| ClientError::Timeout { addr, timeout })?;
        read.map_err(|source| match source.get_ref() {
            Some(inner) if inner.is::<FrameError>() => ClientError::Protocol {
                addr,
                message: source.to_string(),
            },
            _ => ClientError::Io { addr, source },
        })
    }

    fn decode_response<Req: Request>(
        &self,
        version: i16,
        correlation_id: i32,
        frame: Bytes,
    ) -> Result<Req::Response, ClientError> {
        decode_answer::<Req>(self.addr, version, correlation_id, frame)
    }
}

/// The highest version of `Req` that both the broker (`versions`: its (min, max) per API key)
/// and this client's codec support.
pub(crate) fn negotiated_version<Req: Request>(
    addr: SocketAddr,
    versions: &HashMap<i16, (i16, i16)>,
) -> Result<i16, ClientError> {
    let unsupported = || ClientError::Unsupported {
        addr,
        api: ApiKey::try_from(Req::KEY).unwrap_or(ApiKey::ApiVersions),
    };
    let (min, max) = versions.get(&Req::KEY).copied().ok_or_else(unsupported)?;
    let version = max.min(Req::VERSIONS.max);
    if version < min.max(Req::VERSIONS.min) {
        return Err(unsupported());
    }
    Ok(version)
}

/// Encodes `request` at `version` as a size-prefixed frame. The correlation id sits at bytes
/// 8..12 of the frame in every request header version.
pub(crate) fn encode_request_frame<Req: Request>(
    addr: SocketAddr,
    client_id: &str,
    version: i16,
    correlation_id: i32,
    request: &Req,
) -> Result<BytesMut, ClientError> {
    let header = RequestHeader::default()
        .with_request_api_key(Req::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_owned())));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    let protocol = |message: String| ClientError::Protocol { addr, message };
    header
        .encode(&mut buf, Req::header_version(version))
        .map_err(|e| protocol(format!("encoding request header: {e:#}")))?;
    request
        .encode(&mut buf, version)
        .map_err(|e| protocol(format!("encoding request v{version}: {e:#}")))?;
    let len = i32::try_from(buf.len() - 4)
        .map_err(|_| protocol(format!("request of {} bytes is too large", buf.len())))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Decodes an answer frame (the bytes after the size prefix) to a `Req` sent at `version`
/// with `correlation_id`.
pub(crate) fn decode_answer<Req: Request>(
    addr: SocketAddr,
    version: i16,
    correlation_id: i32,
    mut frame: Bytes,
) -> Result<Req::Response, ClientError> {
    let protocol = |message: String| ClientError::Protocol { addr, message };
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
