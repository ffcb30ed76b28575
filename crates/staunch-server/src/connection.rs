//! One client connection: read frames, answer them in order, close on bad input.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use staunch_broker::Broker;
use staunch_broker::Principal;
use staunch_protocol::kafka_protocol::messages::{ApiKey, ResponseKind};
use staunch_protocol::{DecodeError, decode_request, encode_response, frame_length};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::ServerConfig;
use crate::budget::{Charge, RequestBudget};
use crate::handlers::{self, Answer, ClientContext, NoAnswer, Reply};
use crate::sasl::{Gate, MAX_UNAUTHENTICATED_FRAME_BYTES, SaslSession};
use crate::server::ListenerInfo;
use crate::tls;

/// Why a connection ended, for the log line.
enum Close {
    /// The client closed it, or shutdown began between requests.
    Normal,
    /// Something the client sent or did; logged as a warning.
    Client(String),
    /// A local failure (write error, encode bug); logged as an error.
    Local(String),
}

/// An answer on its way to the writer, in request order, with what its request holds until
/// the answer is written: its place among the connection's unanswered requests and its charge
/// on the broker's request budget.
struct Owed {
    answer: Outgoing,
    _in_flight: OwnedSemaphorePermit,
    _charge: Charge,
}

/// An answer, ready or not.
enum Outgoing {
    Ready(Answer),
    /// A produce waiting for durability. The wait itself runs on its own (in the broker's
    /// blocking task); this future only collects and encodes the result.
    Pending(Pin<Box<dyn Future<Output = Answer> + Send>>),
}

/// Serves one connection until the client closes it, it misbehaves, it idles out, or shutdown
/// begins (requests already read are answered first).
///
/// Requests are pipelined: each is handled — every effect on the broker made — in the order it
/// arrived, but a produce's wait for its fsync does not hold up reading and writing the next
/// requests, so one group fsync can cover several of them. Answers go out in request order.
///
/// Memory stays bounded: no request is read while `max_in_flight_requests` are unanswered,
/// none before the frame's charge on `budget` is granted, and between requests the connection
/// holds no read buffer (each frame is read into a buffer of its own size, freed with it).
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerInfo>,
    broker: Broker,
    config: Arc<ServerConfig>,
    budget: RequestBudget,
    mut stop: watch::Receiver<bool>,
) {
    let Some(tls) = listener.tls.clone() else {
        serve_stream(
            stream,
            peer,
            listener,
            Principal::anonymous(),
            broker,
            config,
            budget,
            stop,
        )
        .await;
        return;
    };
    // The handshake is bounded in time, so a client that connects and says nothing (or too
    // little) cannot hold its connection slot; the configuration is the one current now.
    let timeout = tls.settings().handshake_timeout;
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(timeout, tls.acceptor().accept(stream)) => handshake,
        _ = stop.changed() => return,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tls.note_handshake_failure(peer, &listener.config.name, &e.to_string());
            return;
        }
        Err(_) => {
            tls.note_handshake_failure(
                peer,
                &listener.config.name,
                &format!("not completed within {timeout:?}"),
            );
            return;
        }
    };
    let principal = tls::principal_of(stream.get_ref().1.peer_certificates());
    tracing::debug!(%peer, %principal, listener = %listener.config.name, "TLS handshake done");
    serve_stream(
        stream, peer, listener, principal, broker, config, budget, stop,
    )
    .await;
}

/// Serves the requests of one connection's byte stream (plain TCP or TLS), as `principal`.
#[allow(clippy::too_many_arguments)]
async fn serve_stream<S>(
    stream: S,
    peer: SocketAddr,
    listener: Arc<ListenerInfo>,
    principal: Principal,
    broker: Broker,
    config: Arc<ServerConfig>,
    budget: RequestBudget,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let max_in_flight = config.max_in_flight_requests.max(1);
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let (answers, outgoing) = mpsc::channel(max_in_flight);
    let writer = tokio::spawn(send_answers(writer, outgoing, config.idle_timeout));
    let mut sasl = SaslSession::new(listener.config.protocol.uses_sasl());
    let mut context = ClientContext {
        peer,
        principal,
        listener,
    };
    let close = loop {
        if *stop.borrow() {
            break Close::Normal;
        }
        // The semaphore is never closed, so acquiring fails only if shutdown interrupts it.
        let permit = tokio::select! {
            permit = in_flight.clone().acquire_owned() => permit,
            _ = stop.changed() => break Close::Normal,
        };
        let Ok(permit) = permit else {
            break Close::Normal;
        };
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
        // Until a SASL client has authenticated, only small frames are read.
        let max_frame = if sasl.authenticated() {
            config.max_request_bytes
        } else {
            config
                .max_request_bytes
                .min(MAX_UNAUTHENTICATED_FRAME_BYTES)
        };
        let len = match frame_length(prefix, max_frame) {
            Ok(len) => len,
            Err(e) => break Close::Client(format!("refused request frame: {e}")),
        };
        // Back-pressure: the body is not read (nor its memory taken) until the budget has room.
        let charge = tokio::select! {
            charge = budget.charge(len) => charge,
            _ = stop.changed() => break Close::Normal,
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
        let reply = match decode_request(Bytes::from(body)) {
            Ok(request) => {
                match sasl
                    .gate(&request, &broker, &context.listener.sasl, peer)
                    .await
                {
                    Gate::Pass => handlers::handle(&broker, &context, request).await,
                    Gate::Reply(reply) => {
                        if let Some(principal) = sasl.principal() {
                            context.principal = principal.clone();
                        }
                        reply
                    }
                    Gate::Close(reason) => break Close::Client(reason),
                }
            }
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
                Reply::Now(
                    encode_response(ApiKey::ApiVersions, 0, correlation_id, &body)
                        .map(Some)
                        .map_err(|e| NoAnswer::Encode(e.to_string())),
                )
            }
            Err(e) => break Close::Client(e.to_string()),
        };
        let (next, last) = match reply {
            Reply::Now(answer) => (Outgoing::Ready(answer), false),
            Reply::Later(answer) => (Outgoing::Pending(answer), false),
            Reply::Last(answer) => (Outgoing::Pending(answer), true),
        };
        let owed = Owed {
            answer: next,
            _in_flight: permit,
            _charge: charge,
        };
        // Never waits: the channel has room for every request the permits allow.
        if answers.send(owed).await.is_err() || last {
            // The writer stopped, or stops at this answer; it says why below.
            break Close::Normal;
        }
    };
    // Answers already owed are still sent (or, for produces, still made durable).
    drop(answers);
    let writer_close = writer
        .await
        .unwrap_or_else(|e| Close::Local(format!("answer writer failed: {e}")));
    for close in [close, writer_close] {
        match close {
            Close::Normal => {}
            Close::Client(reason) => tracing::warn!(%peer, %reason, "closing connection"),
            Close::Local(reason) => tracing::error!(%peer, %reason, "closing connection"),
        }
    }
    tracing::debug!(%peer, "connection closed");
}

/// Sends the answers in the order they arrive, each once it is ready, then shuts the socket's
/// write side; each request's permits are returned once its answer is written. Stops at the
/// first failure, or when the client reads nothing of an answer for `stall_limit` (so a client
/// that stops reading cannot hold the request budget for ever); the connection then closes.
async fn send_answers<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut outgoing: mpsc::Receiver<Owed>,
    stall_limit: std::time::Duration,
) -> Close {
    let mut close = Close::Normal;
    while let Some(owed) = outgoing.recv().await {
        let answer = match owed.answer {
            Outgoing::Ready(answer) => answer,
            Outgoing::Pending(answer) => answer.await,
        };
        match answer {
            Ok(Some(frame)) => {
                let written = match write_within(&mut writer, &frame, stall_limit).await {
                    Ok(written) => written,
                    Err(stalled) => {
                        close = Close::Client(stalled);
                        break;
                    }
                };
                if let Err(e) = written {
                    close = if matches!(
                        e.kind(),
                        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                    ) {
                        // The client hung up with answers owed (a consumer closing while its
                        // long poll waits does): nothing went wrong here.
                        tracing::debug!(error = %e, "client left before its answer was written");
                        Close::Normal
                    } else {
                        Close::Local(format!("write failed: {e}"))
                    };
                    break;
                }
            }
            Ok(None) => {}
            Err(NoAnswer::Encode(e)) => {
                close = Close::Local(e);
                break;
            }
            Err(NoAnswer::Acks0Failed(e)) => {
                close = Close::Client(e);
                break;
            }
        }
    }
    let _ = writer.shutdown().await;
    close
}

/// Writes `frame`, giving up when no byte of it could be written for `stall_limit` (`Err`
/// says so); the inner result is the write's own.
async fn write_within<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
    stall_limit: std::time::Duration,
) -> Result<std::io::Result<()>, String> {
    let mut rest = frame;
    while !rest.is_empty() {
        match tokio::time::timeout(stall_limit, writer.write(rest)).await {
            Err(_) => {
                return Err(format!(
                    "client read none of its answer for {stall_limit:?} ({} of {} bytes unsent)",
                    rest.len(),
                    frame.len()
                ));
            }
            Ok(Err(e)) => return Ok(Err(e)),
            Ok(Ok(0)) => return Ok(Err(std::io::ErrorKind::WriteZero.into())),
            Ok(Ok(n)) => rest = &rest[n..],
        }
    }
    // TLS may hold the last record until flushed (a TCP socket's flush does nothing).
    match tokio::time::timeout(stall_limit, writer.flush()).await {
        Err(_) => Err(format!(
            "client read none of its answer for {stall_limit:?} (the last {} bytes unsent)",
            frame.len()
        )),
        Ok(flushed) => Ok(flushed),
    }
}
