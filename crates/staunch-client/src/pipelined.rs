//! One connection to one broker with many requests in flight.
//!
//! A Kafka broker answers the requests of one connection in the order it received them, so a
//! client may send the next request before the previous answer arrived. [`PipelinedConnection`]
//! does that for callers sharing it through `&self`:
//!
//! - **Enqueueing is synchronous.** [`PipelinedConnection::request`] assigns the correlation id
//!   and queues the frame before it returns; the frames go out in exactly that order (one
//!   writer task drains one queue). So the wire order is the order of the `request` calls, not
//!   of whichever future happens to be polled first.
//! - **One reader task** reads answer frames (size-checked before allocation) and hands each to
//!   the caller waiting on its correlation id.
//! - **Failure is classified per request.** When the connection fails — read or write error, the
//!   broker closing it, a malformed answer, or any request outliving its timeout — it is closed
//!   and every waiting caller is told whether its request had reached the socket
//!   ([`ClientError::NoAnswer`]: the broker may have acted on it) or not
//!   ([`ClientError::NotSent`]: it certainly did not). Later calls fail with `NotSent`; the
//!   owner (the cluster [`Client`](crate::Client)'s pool) replaces the connection.
//!
//! A timed-out request closes the whole connection, as the Java client does: answers come in
//! order, so every request behind the missing answer would time out too.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use staunch_protocol::frame_length;
use staunch_protocol::kafka_protocol::protocol::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::connection::{decode_answer, encode_request_frame, negotiated_version};
use crate::tls::Stream;
use crate::{ClientConfig, ClientError, Connection};

/// A connection to one broker that carries many requests at once, shared through `&self`
/// (typically in an `Arc`). Requests are written in the order [`request`](Self::request) /
/// [`send_without_answer`](Self::send_without_answer) are called; each answer goes to its own
/// caller. Once it fails it stays failed ([`is_alive`](Self::is_alive) turns `false`).
pub struct PipelinedConnection {
    shared: Arc<Shared>,
    versions: HashMap<i16, (i16, i16)>,
    client_id: String,
    request_timeout: Duration,
}

impl std::fmt::Debug for PipelinedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("PipelinedConnection")
            .field("addr", &self.shared.addr)
            .field("client_id", &self.client_id)
            .field("in_flight", &state.pending.len())
            .field("closed", &state.closed)
            .finish()
    }
}

/// What the reader, the writer and the callers share.
struct Shared {
    addr: SocketAddr,
    /// The runtime of the reader and writer tasks, where abandoned requests are watched.
    runtime: tokio::runtime::Handle,
    state: Mutex<State>,
}

struct State {
    next_correlation_id: i32,
    /// Requests queued or on the wire, by correlation id.
    pending: HashMap<i32, Pending>,
    /// The writer's queue; `None` once closed.
    outgoing: Option<mpsc::UnboundedSender<(i32, Bytes)>>,
    /// Why the connection was closed, once it is.
    closed: Option<String>,
    /// The reader and writer tasks, aborted on close.
    tasks: Vec<AbortHandle>,
}

struct Pending {
    /// The writer has started writing it: from here on a failure is ambiguous.
    on_wire: bool,
    reply: Reply,
}

enum Reply {
    /// The caller waits for the answer frame.
    Answer(oneshot::Sender<Result<Bytes, ClientError>>),
    /// No answer will come (acks=0 produce): the caller waits until it is written.
    Written(oneshot::Sender<Result<(), ClientError>>),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent enough to close.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connection (once): tells every waiting caller whether its request may have
    /// reached the broker, and stops the reader and writer.
    fn close(&self, reason: String) {
        let (pending, tasks) = {
            let mut state = self.lock();
            if state.closed.is_some() {
                return;
            }
            state.closed = Some(reason.clone());
            state.outgoing = None;
            (
                std::mem::take(&mut state.pending),
                std::mem::take(&mut state.tasks),
            )
        };
        tracing::debug!(
            addr = %self.addr,
            %reason,
            in_flight = pending.len(),
            "connection closed"
        );
        for (_, p) in pending {
            let error = if p.on_wire {
                ClientError::NoAnswer {
                    addr: self.addr,
                    reason: reason.clone(),
                }
            } else {
                ClientError::NotSent {
                    addr: self.addr,
                    reason: reason.clone(),
                }
            };
            match p.reply {
                Reply::Answer(tx) => {
                    let _ = tx.send(Err(error));
                }
                Reply::Written(tx) => {
                    let _ = tx.send(Err(error));
                }
            }
        }
        for task in tasks {
            task.abort();
        }
    }
}

impl PipelinedConnection {
    /// Connects to `addr` and negotiates API versions (ApiVersions), both within
    /// `config.connect_timeout`; then starts the reader and writer tasks (needs a tokio
    /// runtime). Answers larger than `config.max_response_bytes` close the connection.
    /// On SSL the broker's certificate must name the IP of `addr`; see
    /// [`connect_named`](Self::connect_named).
    pub async fn connect(addr: SocketAddr, config: &ClientConfig) -> Result<Self, ClientError> {
        PipelinedConnection::connect_named(addr, &addr.ip().to_string(), config).await
    }

    /// [`connect`](Self::connect) to `addr`, which `host` resolved to: on SSL the broker's
    /// certificate must name `host` (unless hostname verification is off).
    pub async fn connect_named(
        addr: SocketAddr,
        host: &str,
        config: &ClientConfig,
    ) -> Result<Self, ClientError> {
        let handshake = Connection::connect_secured(
            addr,
            host,
            &config.client_id,
            config.connect_timeout,
            &config.security,
        )
        .await?;
        let (stream, versions, next_correlation_id) = handshake.into_parts();
        let (read, write) = tokio::io::split(stream);
        let (outgoing, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            addr,
            runtime: tokio::runtime::Handle::current(),
            state: Mutex::new(State {
                next_correlation_id,
                pending: HashMap::new(),
                outgoing: Some(outgoing),
                closed: None,
                tasks: Vec::new(),
            }),
        });
        let reader = tokio::spawn(read_answers(
            shared.clone(),
            read,
            config.max_response_bytes,
        ));
        let writer = tokio::spawn(write_requests(shared.clone(), write, queue));
        {
            let mut state = shared.lock();
            if state.closed.is_some() {
                reader.abort();
                writer.abort();
            } else {
                state.tasks = vec![reader.abort_handle(), writer.abort_handle()];
            }
        }
        tracing::debug!(%addr, "connected");
        Ok(PipelinedConnection {
            shared,
            versions,
            client_id: config.client_id.clone(),
            request_timeout: config.request_timeout,
        })
    }

    /// The broker's address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Whether the connection still works. `false` after any failure: every later call fails
    /// with [`ClientError::NotSent`].
    pub fn is_alive(&self) -> bool {
        self.shared.lock().closed.is_none()
    }

    /// Why the connection was closed, once it is.
    pub fn closed_reason(&self) -> Option<String> {
        self.shared.lock().closed.clone()
    }

    /// Requests queued or waiting for their answer.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Closes the connection; requests in flight fail as described in the module docs.
    pub fn close(&self) {
        self.shared.close("closed by the client".to_owned());
    }

    /// The highest version of `Req` both sides support.
    pub fn version_for<Req: Request>(&self) -> Result<i16, ClientError> {
        negotiated_version::<Req>(self.shared.addr, &self.versions)
    }

    /// The highest version of `Req` both sides support that is not above `max` (for APIs whose
    /// newer versions need something this client does not fill in, e.g. Produce 13's topic
    /// ids).
    pub fn version_at_most<Req: Request>(&self, max: i16) -> Result<i16, ClientError> {
        let version = self.version_for::<Req>()?.min(max);
        let broker_min = self.versions.get(&Req::KEY).map_or(i16::MAX, |r| r.0);
        if version < broker_min.max(Req::VERSIONS.min) {
            return Err(ClientError::Unsupported {
                addr: self.shared.addr,
                api: staunch_protocol::kafka_protocol::messages::ApiKey::try_from(Req::KEY)
                    .unwrap_or(staunch_protocol::kafka_protocol::messages::ApiKey::ApiVersions),
            });
        }
        Ok(version)
    }

    /// Sends `request` at the highest common version and returns the answer, within the
    /// configured request timeout. The request is queued when the returned future is first
    /// polled; use [`request`](Self::request) to fix its place in the wire order at once.
    pub async fn call<Req: Request>(&self, request: Req) -> Result<Req::Response, ClientError> {
        let version = self.version_for::<Req>()?;
        self.request(version, &request).await
    }

    /// Queues `request` at `version` **now** — its place on the wire is fixed when this
    /// returns — and returns a future of its answer that fails after the configured request
    /// timeout (counted from now). The future need not be polled for the request to be sent;
    /// dropping it discards the answer.
    pub fn request<Req: Request>(
        &self,
        version: i16,
        request: &Req,
    ) -> impl Future<Output = Result<Req::Response, ClientError>> + Send + 'static + use<Req> {
        self.request_with_timeout(version, request, self.request_timeout)
    }

    /// [`request`](Self::request) with its own timeout (e.g. a long-poll fetch whose broker-side
    /// wait exceeds the default).
    pub fn request_with_timeout<Req: Request>(
        &self,
        version: i16,
        request: &Req,
        timeout: Duration,
    ) -> impl Future<Output = Result<Req::Response, ClientError>> + Send + 'static + use<Req> {
        let deadline = deadline_after(timeout);
        let (tx, rx) = oneshot::channel();
        let queued = self.enqueue(version, request, Reply::Answer(tx));
        let addr = self.shared.addr;
        let awaited = queued.map(|id| Awaited::new(&self.shared, id, rx, deadline, timeout));
        async move {
            let awaited = awaited?;
            let correlation_id = awaited.correlation_id;
            let frame = awaited.outcome().await?;
            decode_answer::<Req>(addr, version, correlation_id, frame)
        }
    }

    /// Queues `request` at `version` now, for which the broker sends no answer (a produce with
    /// acks=0). The future completes once the request is written to the socket — which says
    /// nothing about whether the broker appended it — or fails after the request timeout.
    pub fn send_without_answer<Req: Request>(
        &self,
        version: i16,
        request: &Req,
    ) -> impl Future<Output = Result<(), ClientError>> + Send + 'static + use<Req> {
        let timeout = self.request_timeout;
        let deadline = deadline_after(timeout);
        let (tx, rx) = oneshot::channel();
        let queued = self.enqueue(version, request, Reply::Written(tx));
        let awaited = queued.map(|id| Awaited::new(&self.shared, id, rx, deadline, timeout));
        async move { awaited?.outcome().await }
    }

    /// Encodes `request`, assigns the next correlation id and queues the frame for the writer.
    fn enqueue<Req: Request>(
        &self,
        version: i16,
        request: &Req,
        reply: Reply,
    ) -> Result<i32, ClientError> {
        let addr = self.shared.addr;
        // Encoded outside the lock with a placeholder id, patched in below.
        let mut frame: BytesMut = encode_request_frame(addr, &self.client_id, version, 0, request)?;
        let mut state = self.shared.lock();
        if let Some(reason) = &state.closed {
            return Err(ClientError::NotSent {
                addr,
                reason: format!("connection closed: {reason}"),
            });
        }
        let correlation_id = state.next_correlation_id;
        state.next_correlation_id = correlation_id.wrapping_add(1);
        frame[8..12].copy_from_slice(&correlation_id.to_be_bytes());
        let queued = state
            .outgoing
            .as_ref()
            .is_some_and(|queue| queue.send((correlation_id, frame.freeze())).is_ok());
        if !queued {
            // Only possible if the writer ended without closing; treat it as closed.
            return Err(ClientError::NotSent {
                addr,
                reason: "connection writer stopped".to_owned(),
            });
        }
        state.pending.insert(
            correlation_id,
            Pending {
                on_wire: false,
                reply,
            },
        );
        Ok(correlation_id)
    }
}

impl Drop for PipelinedConnection {
    fn drop(&mut self) {
        self.shared.close("connection dropped".to_owned());
    }
}

/// `now + timeout`, saturating at about thirty years for absurd timeouts (instead of panicking).
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 3600))
}

/// A queued request's outcome, awaited until its deadline; past it the connection is closed
/// and the request reported as not sent or unanswered, whichever it was.
///
/// The deadline holds even when the caller stops waiting (an outer timeout such as the
/// producer's, a `select!`, a future never polled): dropped before its outcome arrived, it
/// leaves a task on the connection's runtime that closes the connection if this request is
/// still unanswered at its deadline — as the Java client does for every request past
/// `request.timeout.ms` — and ends as soon as the answer comes or the connection closes.
/// Without it, a connection whose answers stopped coming while TCP stayed up would take every
/// later request until the kernel gave up on it.
struct Awaited<T: Send + 'static> {
    shared: Arc<Shared>,
    correlation_id: i32,
    /// `None` once the outcome was taken.
    rx: Option<oneshot::Receiver<Result<T, ClientError>>>,
    deadline: Instant,
    timeout: Duration,
}

impl<T: Send + 'static> Awaited<T> {
    fn new(
        shared: &Arc<Shared>,
        correlation_id: i32,
        rx: oneshot::Receiver<Result<T, ClientError>>,
        deadline: Instant,
        timeout: Duration,
    ) -> Self {
        Awaited {
            shared: Arc::clone(shared),
            correlation_id,
            rx: Some(rx),
            deadline,
            timeout,
        }
    }

    /// Waits for the outcome until the deadline.
    async fn outcome(mut self) -> Result<T, ClientError> {
        let (addr, timeout) = (self.shared.addr, self.timeout);
        let Some(rx) = self.rx.as_mut() else {
            return Err(ClientError::NoAnswer {
                addr,
                reason: "outcome already taken".to_owned(),
            });
        };
        let outcome = match tokio::time::timeout_at(self.deadline, &mut *rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ClientError::NoAnswer {
                addr,
                reason: "the connection's tasks ended".to_owned(),
            }),
            Err(_) => {
                self.shared.close(format!(
                    "request {} not answered within {timeout:?}",
                    self.correlation_id
                ));
                // `close` has just classified this request (unless its answer won the race).
                rx.try_recv().unwrap_or_else(|_| {
                    Err(ClientError::NoAnswer {
                        addr,
                        reason: format!("not answered within {timeout:?}"),
                    })
                })
            }
        };
        self.rx = None;
        outcome
    }
}

impl<T: Send + 'static> Drop for Awaited<T> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        if !matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
            return; // answered, or the connection is closed
        }
        let shared = Arc::clone(&self.shared);
        let (id, deadline, timeout) = (self.correlation_id, self.deadline, self.timeout);
        self.shared.runtime.spawn(async move {
            if tokio::time::timeout_at(deadline, rx).await.is_err() {
                shared.close(format!(
                    "request {id} not answered within {timeout:?} (its caller stopped waiting)"
                ));
            }
        });
    }
}

/// The writer task: writes queued frames in order, marking each as on the wire first.
async fn write_requests(
    shared: Arc<Shared>,
    mut writer: WriteHalf<Stream>,
    mut queue: mpsc::UnboundedReceiver<(i32, Bytes)>,
) {
    while let Some((correlation_id, frame)) = queue.recv().await {
        {
            let mut state = shared.lock();
            if state.closed.is_some() {
                return;
            }
            if let Some(pending) = state.pending.get_mut(&correlation_id) {
                pending.on_wire = true;
            }
        }
        // TLS may hold the frame's last record until flushed (TCP's flush does nothing).
        let written = async {
            writer.write_all(&frame).await?;
            writer.flush().await
        };
        if let Err(e) = written.await {
            shared.close(format!("write failed: {e}"));
            return;
        }
        let mut state = shared.lock();
        if matches!(
            state.pending.get(&correlation_id),
            Some(Pending {
                reply: Reply::Written(_),
                ..
            })
        ) && let Some(Pending {
            reply: Reply::Written(tx),
            ..
        }) = state.pending.remove(&correlation_id)
        {
            let _ = tx.send(Ok(()));
        }
    }
}

/// The reader task: reads answer frames and hands each to its caller; closes the connection
/// on the first failure or on an answer nobody asked for.
async fn read_answers(shared: Arc<Shared>, reader: ReadHalf<Stream>, max_frame_bytes: usize) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let reason = loop {
        let mut prefix = [0u8; 4];
        if let Err(e) = reader.read_exact(&mut prefix).await {
            break if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "the broker closed the connection".to_owned()
            } else {
                format!("read failed: {e}")
            };
        }
        let len = match frame_length(prefix, max_frame_bytes) {
            Ok(len) if len >= 4 => len,
            Ok(len) => break format!("answer frame of {len} bytes has no correlation id"),
            Err(e) => break format!("refused answer frame: {e}"),
        };
        let mut body = vec![0u8; len];
        if let Err(e) = reader.read_exact(&mut body).await {
            break format!("truncated answer frame of {len} bytes: {e}");
        }
        let correlation_id = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let mut state = shared.lock();
        match state.pending.remove(&correlation_id) {
            Some(Pending {
                reply: Reply::Answer(tx),
                ..
            }) => {
                drop(state);
                // The caller may have given up; its answer is then dropped.
                let _ = tx.send(Ok(Bytes::from(body)));
            }
            Some(other) => {
                state.pending.insert(correlation_id, other);
                break format!("answer to request {correlation_id}, which expects none");
            }
            None => break format!("answer with unknown correlation id {correlation_id}"),
        }
    };
    shared.close(reason);
}

#[cfg(test)]
mod tests {
    use staunch_core::{BatchBuilder, PartitionBatch, TopicPartition};
    use staunch_protocol::api_versions_response;
    use staunch_protocol::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use staunch_protocol::kafka_protocol::messages::metadata_response::MetadataResponseTopic;
    use staunch_protocol::kafka_protocol::messages::{
        MetadataRequest, MetadataResponse, ProduceRequest, RequestKind, ResponseKind, TopicName,
    };
    use staunch_protocol::kafka_protocol::protocol::StrBytes;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::fake_broker::{answer, read_request};

    const LIMIT: Duration = Duration::from_secs(20);

    /// The topic a Metadata request asks for, and an answer naming it.
    fn metadata_echo(request: &staunch_protocol::Request) -> (String, ResponseKind) {
        let RequestKind::Metadata(body) = &request.body else {
            panic!("expected Metadata, got {:?}", request.api_key);
        };
        let name = body.topics.as_ref().unwrap()[0].name.clone().unwrap();
        let response = MetadataResponse::default().with_topics(vec![
            MetadataResponseTopic::default().with_name(Some(name.clone())),
        ]);
        (name.0.as_str().to_owned(), ResponseKind::Metadata(response))
    }

    fn metadata_for(topic: &str) -> MetadataRequest {
        MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                TopicName(StrBytes::from_string(topic.to_owned())),
            ))]))
    }

    fn answered_topic(response: &MetadataResponse) -> String {
        response.topics[0]
            .name
            .as_ref()
            .unwrap()
            .0
            .as_str()
            .to_owned()
    }

    /// A broker on a free port that answers the ApiVersions handshake, then hands the socket
    /// to `script`.
    async fn fake_broker<F, Fut>(script: F) -> SocketAddr
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let request = read_request(&mut stream).await.unwrap();
            answer(
                &mut stream,
                &request,
                ResponseKind::ApiVersions(api_versions_response(0)),
            )
            .await;
            script(stream).await;
        });
        addr
    }

    fn config(request_timeout: Duration) -> ClientConfig {
        ClientConfig {
            request_timeout,
            connect_timeout: LIMIT,
            ..ClientConfig::default()
        }
    }

    /// A connection to `addr` whose requests time out after `request_timeout`.
    async fn connected(addr: SocketAddr, request_timeout: Duration) -> PipelinedConnection {
        within(PipelinedConnection::connect(addr, &config(request_timeout)))
            .await
            .unwrap()
    }

    async fn within<T>(future: impl Future<Output = T>) -> T {
        tokio::time::timeout(LIMIT, future)
            .await
            .expect("did not finish in time")
    }

    #[tokio::test]
    async fn many_requests_in_flight_are_written_in_call_order_and_answers_reach_their_callers() {
        const N: usize = 20;
        let (order_tx, order_rx) = oneshot::channel();
        let addr = fake_broker(|mut stream| async move {
            // Every request arrives before any answer is sent: only a pipelining client can
            // get here. Answers go back in reverse, so position tells nothing.
            let mut requests = Vec::new();
            for _ in 0..N {
                requests.push(read_request(&mut stream).await.unwrap());
            }
            let mut order = Vec::new();
            for request in requests.iter().rev() {
                let (topic, body) = metadata_echo(request);
                order.push(topic);
                answer(&mut stream, request, body).await;
            }
            order.reverse();
            let _ = order_tx.send(order);
            let mut rest = [0u8; 1];
            let _ = stream.read(&mut rest).await;
        })
        .await;
        let connection = connected(addr, LIMIT).await;
        let version = connection.version_for::<MetadataRequest>().unwrap();
        let calls: Vec<_> = (0..N)
            .map(|i| connection.request(version, &metadata_for(&format!("t{i}"))))
            .collect();
        assert_eq!(connection.in_flight(), N);
        // Awaited last-first: the answers still land with the callers that asked.
        for (i, call) in calls.into_iter().enumerate().rev() {
            let response = within(call).await.unwrap();
            assert_eq!(answered_topic(&response), format!("t{i}"));
        }
        let order = within(order_rx).await.unwrap();
        let expected: Vec<String> = (0..N).map(|i| format!("t{i}")).collect();
        assert_eq!(order, expected, "written in the order the calls were made");
        assert!(connection.is_alive());
        assert_eq!(connection.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_dropped_connection_fails_waiting_calls_as_unanswered_and_later_ones_as_not_sent() {
        let addr = fake_broker(|mut stream| async move {
            for _ in 0..3 {
                read_request(&mut stream).await.unwrap();
            }
            drop(stream);
        })
        .await;
        let connection = connected(addr, LIMIT).await;
        let version = connection.version_for::<MetadataRequest>().unwrap();
        let calls: Vec<_> = (0..3)
            .map(|i| connection.request(version, &metadata_for(&format!("t{i}"))))
            .collect();
        for call in calls {
            let error = within(call).await.unwrap_err();
            assert!(
                matches!(error, ClientError::NoAnswer { .. }),
                "written, then the connection dropped: {error:?}"
            );
        }
        assert!(!connection.is_alive());
        assert!(connection.closed_reason().unwrap().contains("closed"));
        let error = within(connection.request(version, &metadata_for("late")))
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::NotSent { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn an_unanswered_request_times_out_and_closes_the_connection() {
        let addr = fake_broker(|mut stream| async move {
            read_request(&mut stream).await.unwrap();
            // Never answers; keeps the socket open until the client closes it.
            let mut rest = [0u8; 1];
            let _ = stream.read(&mut rest).await;
        })
        .await;
        let connection = connected(addr, Duration::from_millis(300)).await;
        let version = connection.version_for::<MetadataRequest>().unwrap();
        let error = within(connection.request(version, &metadata_for("slow")))
            .await
            .unwrap_err();
        match error {
            ClientError::NoAnswer { reason, .. } => {
                assert!(reason.contains("not answered within"), "{reason}")
            }
            other => panic!("expected NoAnswer, got {other:?}"),
        }
        assert!(!connection.is_alive());
    }

    /// The caller gives up before the request timeout (as the producer's own timeout does),
    /// or never polls the request at all: the connection is still closed once the request is
    /// past its deadline, so later requests do not queue behind an answer that never comes.
    #[tokio::test]
    async fn an_unanswered_request_whose_caller_gave_up_still_closes_the_connection() {
        for never_polled in [false, true] {
            let addr = fake_broker(|mut stream| async move {
                while read_request(&mut stream).await.is_some() {}
            })
            .await;
            // A deadline well past the 50 ms give-up, so a loaded machine does not reach it
            // before the "still alive" check.
            let connection = connected(addr, Duration::from_secs(1)).await;
            let version = connection.version_for::<MetadataRequest>().unwrap();
            let request = connection.request(version, &metadata_for("slow"));
            if never_polled {
                drop(request);
            } else {
                let gave_up = tokio::time::timeout(Duration::from_millis(50), request).await;
                assert!(gave_up.is_err(), "the fake broker answered: {gave_up:?}");
            }
            assert!(connection.is_alive(), "closed before the deadline");
            within(async {
                while connection.is_alive() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            let reason = connection.closed_reason().unwrap();
            assert!(reason.contains("its caller stopped waiting"), "{reason}");
        }
    }

    /// A caller that gave up on a request that is answered later leaves the connection open.
    #[tokio::test]
    async fn a_late_answer_to_a_caller_that_gave_up_keeps_the_connection() {
        let addr = fake_broker(|mut stream| async move {
            let request = read_request(&mut stream).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer(
                &mut stream,
                &request,
                ResponseKind::Metadata(MetadataResponse::default()),
            )
            .await;
            while read_request(&mut stream).await.is_some() {}
        })
        .await;
        // The answer comes at 100 ms, well before the 1 s deadline; the check is past it.
        let connection = connected(addr, Duration::from_secs(1)).await;
        let version = connection.version_for::<MetadataRequest>().unwrap();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(20),
            connection.request(version, &metadata_for("late")),
        )
        .await;
        assert!(gave_up.is_err(), "answered too soon: {gave_up:?}");
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        assert!(connection.is_alive(), "{:?}", connection.closed_reason());
    }

    #[tokio::test]
    async fn an_oversized_answer_frame_is_refused_without_allocating_it() {
        let addr = fake_broker(|mut stream| async move {
            read_request(&mut stream).await.unwrap();
            stream.write_all(&i32::MAX.to_be_bytes()).await.unwrap();
            let mut rest = [0u8; 1];
            let _ = stream.read(&mut rest).await;
        })
        .await;
        let connection = connected(addr, LIMIT).await;
        let version = connection.version_for::<MetadataRequest>().unwrap();
        let error = within(connection.request(version, &metadata_for("big")))
            .await
            .unwrap_err();
        match error {
            ClientError::NoAnswer { reason, .. } => {
                assert!(reason.contains("exceeds the maximum"), "{reason}")
            }
            other => panic!("expected NoAnswer, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_request_without_answer_completes_once_written() {
        let (seen_tx, seen_rx) = oneshot::channel();
        let addr = fake_broker(|mut stream| async move {
            let produce = read_request(&mut stream).await.unwrap();
            let RequestKind::Produce(body) = &produce.body else {
                panic!("expected Produce");
            };
            let acks = body.acks;
            let metadata = read_request(&mut stream).await.unwrap();
            let (_, answer_body) = metadata_echo(&metadata);
            answer(&mut stream, &metadata, answer_body).await;
            let _ = seen_tx.send(acks);
            let mut rest = [0u8; 1];
            let _ = stream.read(&mut rest).await;
        })
        .await;
        let connection = connected(addr, LIMIT).await;
        let version = connection.version_at_most::<ProduceRequest>(12).unwrap();
        assert_eq!(version, 9, "the fake broker speaks Produce 3..=9");
        let batch = PartitionBatch {
            partition: TopicPartition::new("zero", 0),
            records: BatchBuilder::new(1).record(None, Some(b"x")).build().into(),
        };
        let produce = crate::routing::produce_request(0, Duration::from_secs(1), [&batch]);
        within(connection.send_without_answer(version, &produce))
            .await
            .unwrap();
        let metadata_version = connection.version_for::<MetadataRequest>().unwrap();
        let response = within(connection.request(metadata_version, &metadata_for("after")))
            .await
            .unwrap();
        assert_eq!(answered_topic(&response), "after");
        assert_eq!(within(seen_rx).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_closed_connection_refuses_new_requests_as_not_sent() {
        let addr = fake_broker(|mut stream| async move {
            let mut rest = [0u8; 1];
            let _ = stream.read(&mut rest).await;
        })
        .await;
        let connection = connected(addr, LIMIT).await;
        connection.close();
        let version = connection.version_for::<MetadataRequest>().unwrap();
        let error = within(connection.request(version, &metadata_for("x")))
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::NotSent { .. }), "{error:?}");
    }
}
