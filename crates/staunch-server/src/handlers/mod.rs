//! Request handlers: each converts one Kafka request into broker calls and the results back
//! into the response of the same version.

mod acls;
mod admin;
mod auth;
mod data;
mod groups;
mod scram;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use staunch_broker::{Broker, Principal};
use staunch_core::ErrorCode;
use staunch_protocol::kafka_protocol::messages::{RequestKind, ResponseKind};
use staunch_protocol::kafka_protocol::protocol::StrBytes;
use staunch_protocol::{Request, encode_response};
use tracing::Instrument;

use crate::metrics::RequestTimer;

use crate::server::ListenerInfo;

/// Who sent a request.
#[derive(Debug, Clone)]
pub(crate) struct ClientContext {
    /// The client's address, reported as the member host of consumer groups.
    pub(crate) peer: SocketAddr,
    /// Who the client authenticated as (`User:ANONYMOUS` when it did not).
    pub(crate) principal: Principal,
    /// The listener the connection came in on; answers that name this broker's address
    /// (Metadata, FindCoordinator, DescribeCluster) give this listener's, as Kafka does.
    pub(crate) listener: Arc<ListenerInfo>,
}

impl ClientContext {
    /// This broker's address as clients of this listener reach it: the advertised host and
    /// the listener's bound port.
    pub(crate) fn advertised(&self, broker: &Broker) -> (String, i32) {
        (broker.advertised().0, i32::from(self.listener.bound.port()))
    }
}

/// Text as the codec's string type.
pub(crate) fn text(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// Transactions are not implemented. FindCoordinator for a transactional id and InitProducerId
/// with one are answered TRANSACTIONAL_ID_AUTHORIZATION_FAILED: in librdkafka the only errors
/// besides CLUSTER_AUTHORIZATION_FAILED that are fatal in its transaction coordinator lookup
/// (any other error there is retried, also INVALID_REQUEST and UNSUPPORTED_VERSION), and not
/// retried by aiokafka or the Java client either, so a transactional producer fails at once
/// (COORDINATOR_NOT_AVAILABLE, answered before, made them all retry for ever). librdkafka shows
/// the FindCoordinator answer's error message, [`NO_TRANSACTIONS`], with it.
pub(crate) const TRANSACTIONS_REFUSED: ErrorCode = ErrorCode::TransactionalIdAuthorizationFailed;

/// Why, sent as the error message where the answer has one (FindCoordinator v1+, Produce).
pub(crate) const NO_TRANSACTIONS: &str = "transactions are not supported by Staunch; use a \
     producer without a transactional id (idempotent producers are supported)";

/// Logs, once per request, that a request needing transactions was refused.
pub(crate) fn log_transactions_refused<'a>(
    request: &str,
    transactional_ids: impl IntoIterator<Item = &'a str>,
    client_id: &str,
    context: &ClientContext,
) {
    let ids: Vec<String> = transactional_ids
        .into_iter()
        .map(|id| format!("{id:?}"))
        .collect();
    tracing::warn!(
        "transactions are not supported by Staunch; transactional id {} refused \
         ({request} from client {client_id:?}, {}, at {})",
        ids.join(", "),
        context.principal,
        context.peer
    );
}

/// An encoded response frame, `None` when the protocol says not to answer (a produce with
/// acks 0), or why the connection closes instead.
pub(crate) type Answer = Result<Option<Bytes>, NoAnswer>;

/// Why a request gets no answer and its connection closes.
#[derive(Debug)]
pub(crate) enum NoAnswer {
    /// The answer could not be built or encoded (a bug here); logged as an error.
    Encode(String),
    /// A produce with acks 0 failed: Kafka's rule is to close the connection, the only way
    /// to tell a producer that expects no answer (it then refreshes its metadata and
    /// reconnects); logged as a warning.
    Acks0Failed(String),
}

/// What handling a request produced, once its in-order part is done.
pub(crate) enum Reply {
    /// The answer is ready.
    Now(Answer),
    /// A produce whose records are written (their order fixed) and whose answer comes once
    /// they are durable. The connection may read and handle later requests meanwhile, but
    /// must send the answers in request order.
    Later(Pin<Box<dyn Future<Output = Answer> + Send>>),
    /// A [`Reply::Later`] that is the connection's last: a produce with acks 0 refused while
    /// being written, which closes the connection once the answers before it are sent. No
    /// further request may be read (it would be applied and never answered).
    Last(Pin<Box<dyn Future<Output = Answer> + Send>>),
}

/// Handles one request. Everything that must happen in request order (every effect on the
/// broker) is done before this returns; only the wait for a produce's durability is left to
/// the returned [`Reply::Later`].
pub(crate) async fn handle(broker: &Broker, context: &ClientContext, request: Request) -> Reply {
    let span = tracing::debug_span!(
        "request",
        api = ?request.api_key,
        correlation_id = request.correlation_id,
        client_id = request.client_id.as_deref().unwrap_or_default(),
    );
    let timer = RequestTimer::start(request.api_key);
    handle_in_order(broker, context, request, timer)
        .instrument(span)
        .await
}

/// [`handle`], with `timer` recording the request once its answer is ready.
async fn handle_in_order(
    broker: &Broker,
    context: &ClientContext,
    request: Request,
    timer: RequestTimer,
) -> Reply {
    let version = request.api_version;
    let api_key = request.api_key;
    let correlation_id = request.correlation_id;
    let client_id = request.client_id.clone().unwrap_or_default();
    let response = match request.body {
        RequestKind::ApiVersions(_) => Some(ResponseKind::ApiVersions(
            staunch_protocol::api_versions_response(0),
        )),
        RequestKind::Produce(r) => {
            let (durable, last) = data::produce(broker, r, &client_id, context).await;
            let answer = Box::pin(async move {
                let durable = durable.await;
                timer.done();
                let Some(response) = durable? else {
                    return Ok(None);
                };
                encode_response(
                    api_key,
                    version,
                    correlation_id,
                    &ResponseKind::Produce(response),
                )
                .map(Some)
                .map_err(|e| NoAnswer::Encode(e.to_string()))
            });
            return if last {
                Reply::Last(answer)
            } else {
                Reply::Later(answer)
            };
        }
        RequestKind::Fetch(r) => Some(ResponseKind::Fetch(data::fetch(broker, r, context).await)),
        RequestKind::ListOffsets(r) => Some(ResponseKind::ListOffsets(
            data::list_offsets(broker, r, version, context).await,
        )),
        RequestKind::Metadata(r) => Some(ResponseKind::Metadata(
            data::metadata(broker, r, version, context).await,
        )),
        RequestKind::OffsetForLeaderEpoch(r) => Some(ResponseKind::OffsetForLeaderEpoch(
            data::offset_for_leader_epoch(broker, r, context),
        )),
        RequestKind::InitProducerId(r) => Some(ResponseKind::InitProducerId(
            data::init_producer_id(broker, r, &client_id, context).await,
        )),
        RequestKind::DescribeCluster(r) => Some(ResponseKind::DescribeCluster(
            data::describe_cluster(broker, r, context),
        )),
        RequestKind::CreateAcls(r) => Some(ResponseKind::CreateAcls(
            acls::create_acls(broker, r, context).await,
        )),
        RequestKind::DescribeAcls(r) => Some(ResponseKind::DescribeAcls(acls::describe_acls(
            broker, r, context,
        ))),
        RequestKind::DeleteAcls(r) => Some(ResponseKind::DeleteAcls(
            acls::delete_acls(broker, r, context).await,
        )),
        RequestKind::CreateTopics(r) => Some(ResponseKind::CreateTopics(
            admin::create_topics(broker, r, context).await,
        )),
        RequestKind::DeleteTopics(r) => Some(ResponseKind::DeleteTopics(
            admin::delete_topics(broker, r, version, context).await,
        )),
        RequestKind::CreatePartitions(r) => Some(ResponseKind::CreatePartitions(
            admin::create_partitions(broker, r, context).await,
        )),
        RequestKind::DescribeConfigs(r) => Some(ResponseKind::DescribeConfigs(
            admin::describe_configs(broker, r, context),
        )),
        RequestKind::DescribeLogDirs(r) => Some(ResponseKind::DescribeLogDirs(
            admin::describe_log_dirs(broker, r, context),
        )),
        RequestKind::AlterConfigs(r) => Some(ResponseKind::AlterConfigs(
            admin::alter_configs(broker, r, context).await,
        )),
        RequestKind::IncrementalAlterConfigs(r) => Some(ResponseKind::IncrementalAlterConfigs(
            admin::incremental_alter_configs(broker, r, context).await,
        )),
        RequestKind::FindCoordinator(r) => Some(ResponseKind::FindCoordinator(
            groups::find_coordinator(broker, r, version, &client_id, context),
        )),
        RequestKind::OffsetCommit(r) => Some(ResponseKind::OffsetCommit(
            groups::offset_commit(broker, r, context).await,
        )),
        RequestKind::OffsetFetch(r) => Some(ResponseKind::OffsetFetch(groups::offset_fetch(
            broker, r, version, context,
        ))),
        RequestKind::JoinGroup(r) => Some(ResponseKind::JoinGroup(
            groups::join_group(broker, r, version, &client_id, context).await,
        )),
        RequestKind::SyncGroup(r) => Some(ResponseKind::SyncGroup(
            groups::sync_group(broker, r, version, context).await,
        )),
        RequestKind::Heartbeat(r) => Some(ResponseKind::Heartbeat(groups::heartbeat(
            broker, r, context,
        ))),
        RequestKind::LeaveGroup(r) => Some(ResponseKind::LeaveGroup(groups::leave_group(
            broker, r, version, context,
        ))),
        RequestKind::ListGroups(r) => Some(ResponseKind::ListGroups(groups::list_groups(
            broker, r, context,
        ))),
        RequestKind::DescribeGroups(r) => Some(ResponseKind::DescribeGroups(
            groups::describe_groups(broker, r, context),
        )),
        RequestKind::DeleteGroups(r) => Some(ResponseKind::DeleteGroups(
            groups::delete_groups(broker, r, context).await,
        )),
        RequestKind::DescribeUserScramCredentials(r) => Some(
            ResponseKind::DescribeUserScramCredentials(scram::describe(broker, r, context)),
        ),
        RequestKind::AlterUserScramCredentials(r) => Some(ResponseKind::AlterUserScramCredentials(
            scram::alter(broker, r, context).await,
        )),
        _ => {
            // SaslHandshake and SaslAuthenticate are answered by the connection's SASL
            // session before this. decode_request only lets through the APIs listed in versions.rs, each handled
            // above; reaching here is a bug, answered by closing the connection.
            return Reply::Now(Err(NoAnswer::Encode(format!("no handler for {api_key:?}"))));
        }
    };
    timer.done();
    let Some(response) = response else {
        return Reply::Now(Ok(None));
    };
    Reply::Now(
        encode_response(api_key, version, correlation_id, &response)
            .map(Some)
            .map_err(|e| NoAnswer::Encode(e.to_string())),
    )
}
