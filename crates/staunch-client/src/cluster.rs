//! [`Client`]: a Kafka cluster seen through its metadata, with one pipelined connection per
//! broker.
//!
//! The client keeps a metadata cache (broker node id → advertised address; topic → partitions
//! and leaders) and a pool with one [`PipelinedConnection`] per node, opened on first use and
//! replaced after it fails. Bootstrap addresses are used only to fetch metadata when no known
//! broker answers; every other request goes to the address a broker advertises (Kafka's rule, so
//! a cluster behind one bootstrap name still gets requests routed to each leader).
//!
//! Each broker may get up to three pooled connections, one per [`Lane`]: Kafka brokers answer a
//! connection's requests one at a time, in order, so a fetch long-polling for `max_wait` would
//! hold up every produce behind it on a shared connection, and a slow coordinator call every
//! heartbeat. Produce, metadata and lookups share the data lane; fetches have their own; group
//! calls that answer at once (heartbeat, commit, offset fetch, leave) go on the coordinator
//! lane, as the Java client keeps a separate coordinator connection. JoinGroup and SyncGroup,
//! which may block for a whole rebalance, each get a connection of their own (see `groups`).
//!
//! A topic's cached entry is refreshed before use when it is missing, older than
//! [`ClientConfig::metadata_max_age`], or marked stale — which happens when a call on it got
//! `NOT_LEADER_OR_FOLLOWER`, `LEADER_NOT_AVAILABLE`, `UNKNOWN_TOPIC_OR_PARTITION`,
//! `FENCED_LEADER_EPOCH` or lost its connection. Refreshes are lazy (the next call on the topic
//! makes them) and single-flight (callers waiting for one share its result). When a refresh
//! fails, a stale entry is still used: the leader it names may well be right.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use staunch_core::{ApiError, ErrorCode, PartitionInfo, TopicInfo, TopicPartition};
use staunch_protocol::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use staunch_protocol::kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use staunch_protocol::kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::routing::TopicState;
use crate::{ClientConfig, ClientError, PipelinedConnection};

/// A client of a Kafka-protocol cluster (Staunch or Kafka): routes each request to the right
/// broker using cached metadata, over one shared pipelined connection per broker. Cheap to
/// clone; clones share cache and connections. Implements
/// [`BrokerApi`](staunch_core::BrokerApi) (single attempts, no retries).
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    bootstrap: Vec<String>,
    metadata: Mutex<Metadata>,
    /// Held while a metadata request for topics is in flight (single-flight refreshes).
    refreshing: tokio::sync::Mutex<()>,
    nodes: Mutex<HashMap<(i32, Lane), Arc<NodeSlot>>>,
    /// Group id → the node id of its coordinator, as FindCoordinator last said.
    pub(crate) coordinators: Mutex<HashMap<String, i32>>,
    /// Per partition, the signal that the latest produce call for it has been written (or
    /// given up): the next call waits for it, so calls go out in the order they were made.
    turns: Mutex<HashMap<TopicPartition, oneshot::Receiver<()>>>,
}

/// Which of a broker's pooled connections a request uses (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    /// Produce, metadata, offset lookups, topic creation, producer ids.
    Data,
    /// Fetches, which may long-poll.
    Fetch,
    /// Group calls that the coordinator answers at once.
    Coordinator,
}

#[derive(Debug, Default)]
struct Metadata {
    /// Node id → `host:port` as advertised.
    brokers: HashMap<i32, String>,
    /// The controller's node id, where admin requests go, if the cluster named one.
    controller: Option<i32>,
    topics: HashMap<String, CachedTopic>,
    /// When a metadata request last failed, and why.
    last_failure: Option<(Instant, String)>,
}

#[derive(Debug)]
struct CachedTopic {
    info: TopicInfo,
    fetched: Instant,
    stale: bool,
}

/// One broker's place in the pool.
#[derive(Debug)]
struct NodeSlot {
    node: i32,
    state: Mutex<SlotState>,
    /// Held while connecting, so concurrent callers make one attempt and share its outcome.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// The address it was opened to, and the connection.
    connection: Option<(String, Arc<PipelinedConnection>)>,
    /// Consecutive failed connection attempts.
    failures: u32,
    last_failure: Option<(Instant, String)>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Client {
    /// Creates a client and fetches the cluster's broker list from the first of `bootstrap`
    /// (`host:port` each) that answers, so a wrong address fails here rather than on first use.
    pub async fn connect(
        bootstrap: Vec<String>,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        let config = config.validate()?;
        if bootstrap.is_empty() {
            return Err(ClientError::Config(
                "at least one bootstrap address is needed".to_owned(),
            ));
        }
        let client = Client {
            inner: Arc::new(Inner {
                config,
                bootstrap,
                metadata: Mutex::new(Metadata::default()),
                refreshing: tokio::sync::Mutex::new(()),
                nodes: Mutex::new(HashMap::new()),
                coordinators: Mutex::new(HashMap::new()),
                turns: Mutex::new(HashMap::new()),
            }),
        };
        client.fetch_metadata(&[], false).await?;
        Ok(client)
    }

    /// The configuration the client runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Fetches metadata for `topics` now (creating missing ones if `auto_create` and the
    /// cluster allows it), updates the cache, and returns each topic's partitions or its
    /// error, in the order asked. Fails as a whole only when no broker answered.
    pub async fn metadata(
        &self,
        topics: &[String],
        auto_create: bool,
    ) -> Result<Vec<Result<TopicInfo, ApiError>>, ApiError> {
        self.fetch_metadata(topics, auto_create)
            .await
            .map_err(|e| cluster_error(&e))
    }

    /// The cached leader of a partition, without any I/O: `None` when the partition is not in
    /// the cache or has no leader.
    pub fn leader_for(&self, partition: &TopicPartition) -> Option<i32> {
        let metadata = lock(&self.inner.metadata);
        metadata
            .topics
            .get(&partition.topic)?
            .info
            .partitions
            .iter()
            .find(|p| p.index == partition.partition)?
            .leader
    }

    /// The cached brokers: node id and advertised `host:port`, by node id.
    pub fn brokers(&self) -> Vec<(i32, String)> {
        let metadata = lock(&self.inner.metadata);
        let mut brokers: Vec<(i32, String)> = metadata
            .brokers
            .iter()
            .map(|(id, address)| (*id, address.clone()))
            .collect();
        brokers.sort();
        brokers
    }

    /// The pooled connection to broker `node` that produce and metadata requests use, opened
    /// (within the connect timeout) if there is none or the previous one failed. Concurrent
    /// callers share one attempt. Fails with [`ApiError::NotSent`] when the node is unknown or
    /// cannot be reached.
    pub async fn connection(&self, node: i32) -> Result<Arc<PipelinedConnection>, ApiError> {
        self.connection_on(node, Lane::Data).await
    }

    /// The cached controller's node id, if the cluster named one.
    pub(crate) fn controller(&self) -> Option<i32> {
        lock(&self.inner.metadata).controller
    }

    /// Forgets the cached controller: the next admin call fetches metadata to find it.
    pub(crate) fn forget_controller(&self) {
        lock(&self.inner.metadata).controller = None;
    }

    /// The advertised `host:port` of broker `node`, if known.
    pub(crate) fn broker_address(&self, node: i32) -> Option<String> {
        lock(&self.inner.metadata).brokers.get(&node).cloned()
    }

    /// Records a broker's address learned outside metadata (from FindCoordinator), unless
    /// metadata already gave one.
    pub(crate) fn learn_broker(&self, node: i32, address: String) {
        lock(&self.inner.metadata)
            .brokers
            .entry(node)
            .or_insert(address);
    }

    /// The pooled connection to broker `node` on `lane`; see [`connection`](Self::connection).
    pub(crate) async fn connection_on(
        &self,
        node: i32,
        lane: Lane,
    ) -> Result<Arc<PipelinedConnection>, ApiError> {
        let started = Instant::now();
        let Some(address) = lock(&self.inner.metadata).brokers.get(&node).cloned() else {
            return Err(ApiError::NotSent {
                target: format!("node {node}"),
                reason: "the node is not in the cluster metadata".to_owned(),
            });
        };
        let slot = self.slot(node, lane);
        if let Some(connection) = slot.alive(&address) {
            return Ok(connection);
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(connection) = slot.alive(&address) {
            return Ok(connection);
        }
        if let Some((at, reason)) = lock(&slot.state).last_failure.clone()
            && at >= started
        {
            // An attempt made while this caller waited has just failed: share its outcome.
            return Err(ApiError::NotSent {
                target: format!("node {node} at {address}"),
                reason,
            });
        }
        let old_closed = lock(&slot.state)
            .connection
            .as_ref()
            .map(|(_, old)| old.closed_reason());
        if let Some(closed) = old_closed {
            tracing::debug!(
                node,
                %address,
                reason = closed.as_deref().unwrap_or("address changed"),
                "reconnecting"
            );
            if closed.is_some() {
                // As Kafka's clients do on a disconnect: what this node leads may have moved.
                // A produce with acks 0 learns of a refusal only this way (the broker closes
                // the connection), so without it a stale leader would take every record.
                self.invalidate_led_by(node);
            }
        }
        match connect_to(&address, &self.inner.config).await {
            Ok(connection) => {
                let connection = Arc::new(connection);
                let mut state = lock(&slot.state);
                state.connection = Some((address, connection.clone()));
                state.failures = 0;
                state.last_failure = None;
                Ok(connection)
            }
            Err(e) => {
                let reason = e.to_string();
                let failures = {
                    let mut state = lock(&slot.state);
                    state.failures += 1;
                    state.last_failure = Some((Instant::now(), reason.clone()));
                    state.failures
                };
                if failures >= 3 {
                    tracing::warn!(node = slot.node, %address, failures, %reason, "cannot connect to broker");
                } else {
                    tracing::debug!(node = slot.node, %address, %reason, "cannot connect to broker");
                }
                Err(ApiError::NotSent {
                    target: format!("node {node} at {address}"),
                    reason,
                })
            }
        }
    }

    /// An open connection to any broker — the one with the fewest requests in flight — or
    /// else the first known broker that accepts one.
    pub(crate) async fn any_connection(&self) -> Result<Arc<PipelinedConnection>, ApiError> {
        let open = self
            .open_data_connections()
            .into_iter()
            .min_by_key(|c| c.in_flight());
        if let Some(connection) = open {
            return Ok(connection);
        }
        if self.brokers().is_empty() {
            self.fetch_metadata(&[], false)
                .await
                .map_err(|e| cluster_error(&e))?;
        }
        let mut last = ApiError::NotSent {
            target: "cluster".to_owned(),
            reason: "no broker is known".to_owned(),
        };
        for (node, _) in self.brokers() {
            match self.connection(node).await {
                Ok(connection) => return Ok(connection),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The open, alive connections of the data lane.
    fn open_data_connections(&self) -> Vec<Arc<PipelinedConnection>> {
        let nodes = lock(&self.inner.nodes);
        nodes
            .iter()
            .filter(|((_, lane), _)| *lane == Lane::Data)
            .filter_map(|(_, slot)| lock(&slot.state).connection.as_ref().map(|c| c.1.clone()))
            .filter(|c| c.is_alive())
            .collect()
    }

    fn slot(&self, node: i32, lane: Lane) -> Arc<NodeSlot> {
        lock(&self.inner.nodes)
            .entry((node, lane))
            .or_insert_with(|| {
                Arc::new(NodeSlot {
                    node,
                    state: Mutex::new(SlotState::default()),
                    connecting: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// Marks the cached entries of `topics` stale: the next call on them fetches metadata first.
    pub(crate) fn invalidate<'a>(&self, topics: impl IntoIterator<Item = &'a str>) {
        let mut metadata = lock(&self.inner.metadata);
        for topic in topics {
            if let Some(cached) = metadata.topics.get_mut(topic)
                && !cached.stale
            {
                tracing::debug!(topic, "metadata marked stale");
                cached.stale = true;
            }
        }
    }

    /// Marks stale every cached topic with a partition that `node` leads.
    fn invalidate_led_by(&self, node: i32) {
        let mut metadata = lock(&self.inner.metadata);
        for (topic, cached) in &mut metadata.topics {
            if !cached.stale
                && cached
                    .info
                    .partitions
                    .iter()
                    .any(|p| p.leader == Some(node))
            {
                tracing::debug!(
                    topic,
                    node,
                    "metadata marked stale: its leader's connection closed"
                );
                cached.stale = true;
            }
        }
    }

    /// Makes sure the cache can route `topics`: refreshes the missing, stale and expired ones
    /// (auto-creating them if `auto_create`, as Kafka producers do). Returns the topics that
    /// cannot be routed, with the reason; a stale entry whose refresh failed is still used.
    pub(crate) async fn ensure_topics(
        &self,
        topics: &[String],
        auto_create: bool,
    ) -> HashMap<String, ApiError> {
        let started = Instant::now();
        if self.needing_refresh(topics).is_empty() {
            return HashMap::new();
        }
        let _refreshing = self.inner.refreshing.lock().await;
        // Another caller may have refreshed them while this one waited.
        let needed = self.needing_refresh(topics);
        let mut failed = HashMap::new();
        if needed.is_empty() {
            return failed;
        }
        let shared_failure = lock(&self.inner.metadata)
            .last_failure
            .clone()
            .filter(|(at, _)| *at >= started)
            .map(|(_, reason)| reason);
        let reason = match shared_failure {
            Some(reason) => reason,
            None => match self.fetch_metadata(&needed, auto_create).await {
                Ok(results) => {
                    tracing::debug!(topics = ?needed, "metadata refreshed");
                    for (name, result) in needed.iter().zip(results) {
                        if let Err(e) = result {
                            failed.insert(name.clone(), e);
                        }
                    }
                    return failed;
                }
                Err(e) => e.to_string(),
            },
        };
        let metadata = lock(&self.inner.metadata);
        for name in needed {
            if metadata.topics.contains_key(&name) {
                tracing::debug!(topic = %name, %reason, "metadata refresh failed; using stale entry");
            } else {
                failed.insert(
                    name.clone(),
                    ApiError::NotSent {
                        target: name,
                        reason: format!("no metadata: {reason}"),
                    },
                );
            }
        }
        failed
    }

    fn needing_refresh(&self, topics: &[String]) -> Vec<String> {
        let metadata = lock(&self.inner.metadata);
        let max_age = self.inner.config.metadata_max_age;
        let mut needed: Vec<String> = topics
            .iter()
            .filter(|t| match metadata.topics.get(t.as_str()) {
                None => true,
                Some(cached) => cached.stale || cached.fetched.elapsed() > max_age,
            })
            .cloned()
            .collect();
        needed.sort();
        needed.dedup();
        needed
    }

    /// The leader of each partition from the cache, or why it has none; `failed` holds the
    /// topics [`ensure_topics`](Self::ensure_topics) could not make routable.
    pub(crate) fn route(
        &self,
        partitions: &[TopicPartition],
        failed: &HashMap<String, ApiError>,
    ) -> Vec<Result<i32, ApiError>> {
        let metadata = lock(&self.inner.metadata);
        crate::routing::route(
            partitions,
            |name: &str| {
                if let Some(error) = failed.get(name) {
                    return TopicState::Failed(error.clone());
                }
                match metadata.topics.get(name) {
                    Some(cached) => TopicState::Known(&cached.info),
                    None => TopicState::Failed(ApiError::NotSent {
                        target: name.to_owned(),
                        reason: "no metadata for the topic".to_owned(),
                    }),
                }
            },
            |node| metadata.brokers.contains_key(&node),
        )
    }

    /// Sends a Metadata request for `topics` (none: brokers only) to an open connection, else a
    /// known broker, else a bootstrap address — all within one request timeout — and applies
    /// the answer to the cache. Returns each topic's outcome in the order asked.
    async fn fetch_metadata(
        &self,
        topics: &[String],
        auto_create: bool,
    ) -> Result<Vec<Result<TopicInfo, ApiError>>, ClientError> {
        let timeout = self.inner.config.request_timeout;
        let deadline = crate::pipelined::deadline_after(timeout);
        let attempt = async {
            let mut last = String::from("no broker to ask");
            // Open connections, least loaded first.
            let mut open = self.open_data_connections();
            open.sort_by_key(|c| c.in_flight());
            for connection in open {
                match metadata_call(&connection, topics, auto_create).await {
                    Ok(response) => return Ok(response),
                    Err(e) => last = e.to_string(),
                }
            }
            for (node, _) in self.brokers() {
                match self.connection(node).await {
                    Ok(connection) => match metadata_call(&connection, topics, auto_create).await {
                        Ok(response) => return Ok(response),
                        Err(e) => last = e.to_string(),
                    },
                    Err(e) => last = e.to_string(),
                }
            }
            for address in &self.inner.bootstrap {
                match connect_to(address, &self.inner.config).await {
                    Ok(connection) => match metadata_call(&connection, topics, auto_create).await {
                        Ok(response) => return Ok(response),
                        Err(e) => last = e.to_string(),
                    },
                    Err(e) => last = e.to_string(),
                }
            }
            Err(last)
        };
        let outcome = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no metadata within {timeout:?}")),
        };
        match outcome {
            Ok(response) => Ok(self.apply(&response, topics)),
            Err(reason) => {
                let mut metadata = lock(&self.inner.metadata);
                metadata.last_failure = Some((Instant::now(), reason.clone()));
                let mut brokers: Vec<String> = metadata.brokers.values().cloned().collect();
                brokers.sort();
                brokers.extend(self.inner.bootstrap.iter().cloned());
                brokers.dedup();
                tracing::debug!(%reason, "metadata request failed");
                Err(ClientError::Unreachable {
                    brokers: brokers.join(", "),
                    reason,
                })
            }
        }
    }

    /// Updates the cache from a Metadata answer; returns the outcome for each of `asked`.
    fn apply(
        &self,
        response: &MetadataResponse,
        asked: &[String],
    ) -> Vec<Result<TopicInfo, ApiError>> {
        let now = Instant::now();
        let mut metadata = lock(&self.inner.metadata);
        if response.controller_id.0 >= 0 {
            metadata.controller = Some(response.controller_id.0);
        }
        if !response.brokers.is_empty() {
            metadata.brokers = response
                .brokers
                .iter()
                .map(|b| (b.node_id.0, host_port(b.host.as_str(), b.port)))
                .collect();
        }
        let mut outcomes: HashMap<String, Result<TopicInfo, ApiError>> = HashMap::new();
        for topic in &response.topics {
            let Some(name) = topic.name.as_ref().map(|n| n.0.as_str().to_owned()) else {
                continue;
            };
            let outcome = match ErrorCode::from_code(topic.error_code) {
                ErrorCode::None => {
                    let mut partitions: Vec<PartitionInfo> = topic
                        .partitions
                        .iter()
                        .map(|p| PartitionInfo {
                            index: p.partition_index,
                            leader: (p.leader_id.0 >= 0).then_some(p.leader_id.0),
                        })
                        .collect();
                    partitions.sort_by_key(|p| p.index);
                    let info = TopicInfo {
                        name: name.clone(),
                        partitions,
                    };
                    metadata.topics.insert(
                        name.clone(),
                        CachedTopic {
                            info: info.clone(),
                            fetched: now,
                            stale: false,
                        },
                    );
                    Ok(info)
                }
                code => {
                    if let Some(cached) = metadata.topics.get_mut(&name) {
                        cached.stale = true;
                    }
                    if code == ErrorCode::UnknownTopicOrPartition {
                        metadata.topics.remove(&name);
                    }
                    Err(ApiError::Broker {
                        code,
                        message: None,
                    })
                }
            };
            outcomes.insert(name, outcome);
        }
        asked
            .iter()
            .map(|name| {
                outcomes.get(name).cloned().unwrap_or_else(|| {
                    Err(ApiError::Broker {
                        code: ErrorCode::UnknownTopicOrPartition,
                        message: Some("the metadata answer does not list the topic".to_owned()),
                    })
                })
            })
            .collect()
    }
}

impl NodeSlot {
    /// The open connection, if it is alive and still to `address`.
    fn alive(&self, address: &str) -> Option<Arc<PipelinedConnection>> {
        let state = lock(&self.state);
        let (to, connection) = state.connection.as_ref()?;
        (to == address && connection.is_alive()).then(|| connection.clone())
    }
}

/// One Metadata request on `connection`.
async fn metadata_call(
    connection: &PipelinedConnection,
    topics: &[String],
    auto_create: bool,
) -> Result<MetadataResponse, ClientError> {
    let version = connection.version_for::<MetadataRequest>()?;
    let request = MetadataRequest::default()
        .with_topics(Some(
            topics
                .iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                })
                .collect(),
        ))
        // Versions before 4 have no flag (the broker decides); false would not encode.
        .with_allow_auto_topic_creation(auto_create || version < 4);
    connection.request(version, &request).await
}

/// Resolves `host:port` and connects to the first address that accepts, within the connect
/// timeout for the name lookup and for each address.
pub(crate) async fn connect_to(
    address: &str,
    config: &ClientConfig,
) -> Result<PipelinedConnection, ClientError> {
    let unreachable = |reason: String| ClientError::Unreachable {
        brokers: address.to_owned(),
        reason,
    };
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(config.connect_timeout, tokio::net::lookup_host(address))
            .await
            .map_err(|_| {
                unreachable(format!(
                    "name lookup took over {:?}",
                    config.connect_timeout
                ))
            })?
            .map_err(|e| unreachable(format!("name lookup failed: {e}")))?
            .collect();
    let mut last = unreachable("the name resolves to no address".to_owned());
    // The name a TLS broker's certificate must carry: the host of `host:port`.
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    for addr in addrs {
        match PipelinedConnection::connect_named(addr, host, config).await {
            Ok(connection) => return Ok(connection),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `host:port`, bracketing IPv6 literals.
pub(crate) fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A failure of a cluster-wide call (metadata, producer id) as an [`ApiError`].
pub(crate) fn cluster_error(error: &ClientError) -> ApiError {
    match error {
        ClientError::NoAnswer { addr, reason } => ApiError::NoAnswer {
            broker: addr.to_string(),
            reason: reason.clone(),
        },
        ClientError::Timeout { addr, timeout } => ApiError::NoAnswer {
            broker: addr.to_string(),
            reason: format!("no answer within {timeout:?}"),
        },
        ClientError::Unsupported { .. } | ClientError::Protocol { .. } => {
            ApiError::Protocol(error.to_string())
        }
        ClientError::Authentication { .. } => ApiError::Broker {
            code: staunch_core::ErrorCode::SaslAuthenticationFailed,
            message: Some(error.to_string()),
        },
        ClientError::Unreachable { brokers, reason } => ApiError::NotSent {
            target: brokers.clone(),
            reason: reason.clone(),
        },
        other => ApiError::NotSent {
            target: "cluster".to_owned(),
            reason: other.to_string(),
        },
    }
}

/// A connection failure for one partition of a produce, fetch or offset lookup.
pub(crate) fn transport_error(partition: &TopicPartition, error: &ClientError) -> ApiError {
    match error {
        ClientError::NotSent { addr, reason } => ApiError::NotSent {
            target: partition.to_string(),
            reason: format!("{reason} (broker {addr})"),
        },
        ClientError::Io { addr, source } => ApiError::NoAnswer {
            broker: addr.to_string(),
            reason: source.to_string(),
        },
        ClientError::NoAnswer { .. }
        | ClientError::Authentication { .. }
        | ClientError::Timeout { .. }
        | ClientError::Unsupported { .. }
        | ClientError::Protocol { .. } => cluster_error(error),
        other => ApiError::NotSent {
            target: partition.to_string(),
            reason: other.to_string(),
        },
    }
}

/// A `NotSent` about a broker, restated for one of the partitions meant for it.
pub(crate) fn retarget(partition: &TopicPartition, error: &ApiError) -> ApiError {
    match error {
        ApiError::NotSent { target, reason } => ApiError::NotSent {
            target: partition.to_string(),
            reason: format!("{target}: {reason}"),
        },
        other => other.clone(),
    }
}

/// Waits (at most `limit`) until the earlier calls on the same partitions have been written.
pub(crate) async fn wait_turn(earlier: Vec<oneshot::Receiver<()>>, limit: Duration) {
    let waited = tokio::time::timeout(limit, async {
        for turn in earlier {
            // Resolves when the earlier call drops its sender: written, failed or abandoned.
            let _ = turn.await;
        }
    })
    .await;
    if waited.is_err() {
        tracing::warn!(
            ?limit,
            "an earlier produce call on the same partitions did not go out in time; not waiting for it"
        );
    }
}

impl Client {
    /// Takes this call's place in the per-partition order: returns the signals to drop once it
    /// is written and those of the earlier calls to wait for.
    pub(crate) fn take_turn(
        &self,
        partitions: &[TopicPartition],
    ) -> (Vec<oneshot::Sender<()>>, Vec<oneshot::Receiver<()>>) {
        let mut turns = lock(&self.inner.turns);
        let mut mine = Vec::with_capacity(partitions.len());
        let mut earlier = Vec::new();
        let mut seen = std::collections::HashSet::with_capacity(partitions.len());
        for partition in partitions {
            if !seen.insert(partition) {
                // Listed twice in one call: one turn covers both.
                continue;
            }
            let (done, turn) = oneshot::channel();
            if let Some(previous) = turns.insert(partition.clone(), turn) {
                earlier.push(previous);
            }
            mine.push(done);
        }
        (mine, earlier)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use staunch_core::{
        Acks, BatchBuilder, BrokerApi, PartitionBatch, ProduceCall, TopicPartition,
    };
    use staunch_protocol::api_versions_response;
    use staunch_protocol::kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use staunch_protocol::kafka_protocol::messages::{
        BrokerId, MetadataResponse, RequestKind, ResponseKind, TopicName,
    };
    use staunch_protocol::kafka_protocol::protocol::StrBytes;
    use tokio::net::TcpListener;

    use crate::fake_broker::{answer, read_request};

    const LIMIT: Duration = Duration::from_secs(20);

    /// A one-node fake broker that closes the connection on every produce without an answer
    /// (as a broker does after refusing a produce with acks 0). Counts metadata requests and
    /// produces, and requests of any other kind in `unexpected` (closing the connection too,
    /// so a test must check it: a panic in the connection's task would only close it, which
    /// looks like success).
    async fn closing_broker(
        metadata: Arc<AtomicUsize>,
        produces: Arc<AtomicUsize>,
        unexpected: Arc<AtomicUsize>,
    ) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (metadata, produces, unexpected) =
                    (metadata.clone(), produces.clone(), unexpected.clone());
                tokio::spawn(async move {
                    while let Some(request) = read_request(&mut stream).await {
                        let body = match &request.body {
                            RequestKind::ApiVersions(_) => {
                                ResponseKind::ApiVersions(api_versions_response(0))
                            }
                            RequestKind::Metadata(_) => {
                                metadata.fetch_add(1, Ordering::SeqCst);
                                ResponseKind::Metadata(
                                    MetadataResponse::default()
                                        .with_brokers(vec![
                                            MetadataResponseBroker::default()
                                                .with_node_id(BrokerId(1))
                                                .with_host(StrBytes::from_static_str("127.0.0.1"))
                                                .with_port(i32::from(addr.port())),
                                        ])
                                        .with_topics(vec![
                                            MetadataResponseTopic::default()
                                                .with_name(Some(TopicName(
                                                    StrBytes::from_static_str("t"),
                                                )))
                                                .with_partitions(vec![
                                                    MetadataResponsePartition::default()
                                                        .with_partition_index(0)
                                                        .with_leader_id(BrokerId(1)),
                                                ]),
                                        ]),
                                )
                            }
                            RequestKind::Produce(_) => {
                                produces.fetch_add(1, Ordering::SeqCst);
                                return; // close without an answer
                            }
                            _ => {
                                unexpected.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        };
                        answer(&mut stream, &request, body).await;
                    }
                });
            }
        });
        addr
    }

    /// A broker that closed the connection (the only way it can refuse a produce with acks 0)
    /// makes the client refresh the metadata of what that node leads, as Kafka's clients do on
    /// any disconnect — else a stale leader would take every record until the metadata
    /// expired.
    #[tokio::test]
    async fn a_connection_closed_by_its_broker_marks_what_it_leads_stale() {
        let (metadata, produces, unexpected) = (Arc::default(), Arc::default(), Arc::default());
        let addr = closing_broker(
            Arc::clone(&metadata),
            Arc::clone(&produces),
            Arc::clone(&unexpected),
        )
        .await;
        let client = crate::fake_broker::client(addr, LIMIT).await;
        let send = || ProduceCall {
            acks: Acks::None,
            timeout: LIMIT,
            batches: vec![PartitionBatch {
                partition: TopicPartition::new("t", 0),
                records: Bytes::from(BatchBuilder::new(1).record(None, Some(b"v")).build()),
            }],
        };
        client.produce(send()).await;
        let after_first = metadata.load(Ordering::SeqCst);
        // Let the client see the close.
        let start = std::time::Instant::now();
        while produces.load(Ordering::SeqCst) < 1 && start.elapsed() < LIMIT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The call that reconnects marks the node's topics stale (it is routed already); the
        // next one refreshes them first. Kafka's producer, too, may send to the old leader
        // until the refresh it asked for on the disconnect has arrived.
        client.produce(send()).await;
        client.produce(send()).await;
        assert!(
            metadata.load(Ordering::SeqCst) > after_first,
            "no metadata refresh after the broker closed the connection"
        );
        assert_eq!(unexpected.load(Ordering::SeqCst), 0, "unexpected requests");
    }
}
